// Package server is the control plane: stacks mirrored into Consul, the port table, the Proxy
// RPC, sessions, the net-id pool, control channels and events.
package server

import (
	"context"
	"net/http"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc"
)

// Config is what the server role needs from the agent.
type Config struct {
	Agent  *config.Config
	Consul *api.Client
	Events *events.Store
	Logger hclog.Logger
}

// Server is the control-plane role.
type Server struct {
	cfg    Config
	logger hclog.Logger
}

// New builds the server role.
func New(cfg Config) (*Server, error) {
	return &Server{cfg: cfg, logger: cfg.Logger}, nil
}

// RegisterGRPC adds the server's gRPC services.
func (s *Server) RegisterGRPC(g *grpc.Server) {}

// RegisterHTTP adds the server's HTTP routes.
func (s *Server) RegisterHTTP(mux *http.ServeMux) {}

// Run blocks until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Reload applies a new agent configuration.
func (s *Server) Reload(cfg *config.Config) error { return nil }
