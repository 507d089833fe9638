// Package server is the control plane: stacks mirrored into Consul, the port table, the Proxy
// RPC, sessions, the net-id pool, control channels and events.
package server

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/certstore"
	"github.com/nullnet/nullnet/agent/servicepolicy"
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
	// LockKey is the Consul KV key of the stacks leader lock (default "nullnet/leader").
	LockKey string
	// ACME overrides where ACME certificates and challenges go (tests); default the
	// certificate store that WatchCertificates streams.
	ACME ACMESinks
	// ACMEPropagationDelay overrides the wait between storing a challenge and asking the CA
	// to validate it (tests; default 2 s).
	ACMEPropagationDelay time.Duration
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

	// table is the published port table (catalog.go, ingress_watch.go).
	table *portTable
	// stacks is the local stacks directory (stacks.go); mirror writes it into Consul while this
	// server holds the leader lock (nil when no stacks_dir is set or there is no Consul).
	stacks stacks
	mirror *consul.Mirror

	// certs is what WatchCertificates streams (certs.go, ingress_certs.go); certFiles feeds it
	// from server.certs_dir.
	certs     *certstore.Store
	certFiles certFiles
	// certSendTimeout overrides certSendTimeout (tests).
	certSendTimeout time.Duration
}

// New builds the server role.
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, logger: cfg.Logger, events: cfg.Events, defs: newDefinitionSet(), agentCfg: cfg.Agent,
		table: newPortTable()}
	s.initCerts()
	if err := s.initStacks(); err != nil {
		return nil, err
	}
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
	s.registerStacksHTTP(mux)
	s.registerServersHTTP(mux)
}

// Run blocks until ctx ends; every goroutine it starts has ended when it returns.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.plane.run(ctx) }()
	go func() { defer wg.Done(); s.runCerts(ctx) }()
	if s.cfg.Consul != nil {
		wg.Add(1)
		var onServices func(servicesView, uint64)
		if s.plane.replicas != nil {
			onServices = s.plane.replicas.servicesChanged
		}
		go func() { defer wg.Done(); s.watchCatalog(ctx, onServices) }()
	}
	if s.cfg.Consul != nil {
		sinks := s.cfg.ACME
		if sinks == nil {
			sinks = s.certs
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.runACME(ctx, sinks) }()
	}
	if s.mirror != nil {
		wg.Add(2)
		go func() { defer wg.Done(); s.mirror.Run(ctx) }()
		go func() { defer wg.Done(); s.watchStacks(ctx) }()
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// Reload applies a new agent configuration.
func (s *Server) Reload(cfg *config.Config) error {
	s.mu.Lock()
	if !reflect.DeepEqual(s.agentCfg.Server.ACME, cfg.Server.ACME) {
		s.logger.Warn("server.acme was changed by a reload; it takes effect at the next restart")
	}
	s.agentCfg = cfg
	s.mu.Unlock()
	s.setCertsDir(cfg.Server.CertsDir)
	if s.mirror == nil {
		if cfg.Server.StacksDir != "" {
			s.logger.Warn("server.stacks_dir was set by a reload; it takes effect at the next restart")
		}
		return nil
	}
	s.setStacksDir(cfg.Server.StacksDir)
	return s.reloadStacks("reload", true)
}

// initStacks loads the stacks directory once (an invalid set stops the start, as an invalid
// configuration does) and builds the Consul mirror.
func (s *Server) initStacks() error {
	s.stacks.dirChanged = make(chan struct{}, 1)
	dir := s.agentCfg.Server.StacksDir
	if dir == "" || s.cfg.Consul == nil {
		return nil
	}
	key := s.cfg.LockKey
	if key == "" {
		key = "nullnet/leader"
	}
	m, err := consul.NewMirror(consul.MirrorConfig{
		Client: s.cfg.Consul, Logger: s.logger.Named("mirror"), LockKey: key,
		Node: DefinitionsNode, NodeMeta: map[string]string{"external-node": "true"}, Tag: DefinitionTag,
		ExternalWatch: true, // watchCatalog reads the same node and hands every answer over
		// Policies travel as KV documents beside their definitions (policies.go).
		KVPrefix: servicepolicy.KVPrefix,
		OnLeadership: func(leader bool) {
			kind := events.LeadershipAcquired
			if !leader {
				kind = events.LeadershipLost
			}
			s.events.Emit(events.Event{Kind: kind, Fields: map[string]string{"lock": key}})
		},
		OnWriteError: func(err error) {
			s.events.Emit(events.Event{Kind: events.CatalogMirrorFailed, Severity: events.Error, Message: err.Error()})
		},
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.mirror = m
	s.stacks.dir = dir
	if err := s.reloadStacks("start", true); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// ingressService implements pb.IngressServer: WatchPortMappings (port table),
// Proxy/ReleaseProxy (plane) and WatchCertificates (ingress_certs.go).
type ingressService struct {
	pb.UnimplementedIngressServer
	s *Server
}

// controlService implements pb.ControlServer: ControlChannel and ReportEvent (plane).
type controlService struct {
	pb.UnimplementedControlServer
	s *Server
}
