// Package server is the control plane: stacks mirrored into Consul, the port table, the Proxy
// RPC, sessions, the net-id pool, control channels and events.
package server

import (
	"context"
	"net/http"
	"sync"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
)

// Config is what the server role needs from the agent.
type Config struct {
	Agent  *config.Config
	Consul *api.Client
	Events *events.Store
	Logger hclog.Logger
}

// Server is the control-plane role. Its parts live in their own files: stacks and the Consul
// mirror (configuration path), the port table and WatchPortMappings, and the "plane" (control
// channels, sessions, Proxy RPC) in plane.go.
type Server struct {
	cfg    Config
	logger hclog.Logger
	events *events.Store

	// defs is every stack service as read back from Consul.
	defs *definitionSet

	mu sync.Mutex // guards agentCfg
	// agentCfg is the configuration in effect (replaced on Reload).
	agentCfg *config.Config

	plane *plane
}

// New builds the server role.
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, logger: cfg.Logger, events: cfg.Events, defs: newDefinitionSet(), agentCfg: cfg.Agent}
	p, err := newPlane(s)
	if err != nil {
		return nil, err
	}
	s.plane = p
	return s, nil
}

// RegisterGRPC adds the server's gRPC services.
func (s *Server) RegisterGRPC(g *grpc.Server) {
	pb.RegisterIngressServer(g, &ingressService{s: s})
	pb.RegisterControlServer(g, &controlService{s: s})
}

// RegisterHTTP adds the server's HTTP routes.
func (s *Server) RegisterHTTP(mux *http.ServeMux) {
	s.plane.registerHTTP(mux)
}

// Run blocks until ctx ends; every goroutine it starts has ended when it returns.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.plane.run(ctx) }()
	<-ctx.Done()
	wg.Wait()
	return nil
}

// Reload applies a new agent configuration.
func (s *Server) Reload(cfg *config.Config) error {
	s.mu.Lock()
	s.agentCfg = cfg
	s.mu.Unlock()
	return nil
}

// ingressService implements pb.IngressServer: WatchPortMappings (port table) and
// Proxy/ReleaseProxy (plane).
type ingressService struct {
	pb.UnimplementedIngressServer
	s *Server
}

// controlService implements pb.ControlServer: ControlChannel and ReportEvent (plane).
type controlService struct {
	pb.UnimplementedControlServer
	s *Server
}
