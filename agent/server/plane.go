package server

import (
	"context"
	"net/http"
)

// plane is the session side of the server: control channels, sessions, the Proxy RPC.
type plane struct {
	s *Server
}

func newPlane(s *Server) (*plane, error) { return &plane{s: s}, nil }

func (p *plane) registerHTTP(mux *http.ServeMux) {}

func (p *plane) run(ctx context.Context) { <-ctx.Done() }
