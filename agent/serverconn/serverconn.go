// Package serverconn gives client and proxy agents one gRPC connection to the nullnet servers:
// addresses from config, or discovered in Consul (service "nullnet" tagged "server"). gRPC itself
// reconnects with capped exponential backoff and jitter.
package serverconn

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// ConsulServiceName is the Consul service every nullnet agent registers as; servers carry the
// ServerTag tag and their gRPC port as the service port.
const (
	ConsulServiceName = "nullnet"
	ServerTag         = "server"
)

// Config for Dial.
type Config struct {
	// Servers are host:port gRPC addresses; when empty they are discovered through Consul.
	Servers []string
	Consul  *api.Client
	// Creds secures the connection; nil means plaintext.
	Creds  credentials.TransportCredentials
	Logger hclog.Logger
}

// Conn is a connection to the servers that follows Consul when the address list is discovered.
type Conn struct {
	*grpc.ClientConn
	res    *manual.Resolver
	cfg    Config
	logger hclog.Logger
}

// Dial returns a connection; it does not wait for a server to answer.
func Dial(cfg Config) (*Conn, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	res := manual.NewBuilderWithScheme("nullnet")
	addrs := cfg.Servers
	if len(addrs) == 0 && cfg.Consul != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, _, _ = discover(ctx, cfg.Consul, 0)
		cancel()
	}
	res.InitialState(state(addrs))
	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	cc, err := grpc.NewClient("nullnet:///servers",
		grpc.WithResolvers(res),
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 3 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return nil, fmt.Errorf("serverconn: dialing servers %v: %w", addrs, err)
	}
	return &Conn{ClientConn: cc, res: res, cfg: cfg, logger: logger.Named("serverconn")}, nil
}

// Run keeps the address list in step with Consul when servers are discovered; it returns when
// ctx ends. With static servers it only waits.
func (c *Conn) Run(ctx context.Context) {
	if len(c.cfg.Servers) > 0 || c.cfg.Consul == nil {
		<-ctx.Done()
		return
	}
	var idx uint64
	for ctx.Err() == nil {
		addrs, next, err := discover(ctx, c.cfg.Consul, idx)
		if err != nil {
			c.logger.Warn("discovering servers in Consul failed; keeping the last list", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			continue
		}
		if next < idx {
			next = 0
		}
		idx = max(next, 1)
		if len(addrs) > 0 {
			c.res.UpdateState(state(addrs))
		}
	}
}

func discover(ctx context.Context, client *api.Client, idx uint64) ([]string, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: idx, WaitTime: 30 * time.Second}).WithContext(ctx)
	svcs, meta, err := client.Health().Service(ConsulServiceName, ServerTag, true, q)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	for _, s := range svcs {
		addr := s.Service.Address
		if addr == "" {
			addr = s.Node.Address
		}
		out = append(out, net.JoinHostPort(addr, strconv.Itoa(s.Service.Port)))
	}
	return out, meta.LastIndex, nil
}

func state(addrs []string) resolver.State {
	var st resolver.State
	for _, a := range addrs {
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	return st
}
