// Package client is the node side: the control channel to a server, tunnel ends built with
// netlink, and host services registered in Consul.
package client

import (
	"context"
	"net/http"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc"
)

// Config is what the client role needs from the agent.
type Config struct {
	Agent  *config.Config
	Consul *api.Client
	Conn   *grpc.ClientConn
	Events events.Emitter
	Logger hclog.Logger
}

// Client is the node role.
type Client struct {
	cfg Config
}

// New builds the client role.
func New(cfg Config) (*Client, error) { return &Client{cfg: cfg}, nil }

// RegisterHTTP adds the client's HTTP routes.
func (c *Client) RegisterHTTP(mux *http.ServeMux) {}

// Status is shown in /v1/agent/self.
func (c *Client) Status() any { return nil }

// Run blocks until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Reload applies a new agent configuration.
func (c *Client) Reload(cfg *config.Config) error { return nil }
