// Package proxy is the ingress data plane: listeners that follow the port table, the TCP and
// UDP relays and the HTTP router.
package proxy

import (
	"context"
	"net/http"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc"
)

// Config is what the proxy role needs from the agent.
type Config struct {
	Agent  *config.Config
	Conn   *grpc.ClientConn
	Events events.Emitter
	Logger hclog.Logger
}

// Proxy is the ingress role.
type Proxy struct {
	cfg Config
}

// New builds the proxy role.
func New(cfg Config) (*Proxy, error) { return &Proxy{cfg: cfg}, nil }

// RegisterHTTP adds the proxy's HTTP routes.
func (p *Proxy) RegisterHTTP(mux *http.ServeMux) {}

// Status is shown in /v1/agent/self.
func (p *Proxy) Status() any { return nil }

// Run blocks until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Reload applies a new agent configuration.
func (p *Proxy) Reload(cfg *config.Config) error { return nil }
