package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/serverconn"
	"github.com/nullnet/nullnet/agent/version"
	"github.com/nullnet/nullnet/config"
	"github.com/nullnet/nullnet/lib/retry"
)

// Meta keys on the agent's own "nullnet" service in Consul.
const (
	MetaNode     = "nullnet-node"
	MetaUnderlay = "nullnet-underlay"
	MetaHTTPPort = "nullnet-http-port"
	MetaGRPCPort = "nullnet-grpc-port"
	MetaVersion  = "nullnet-version"
)

// selfRegistration is the agent's own entry in Consul: service "nullnet" tagged with its roles,
// so servers are discoverable and replicas can be matched to the nullnet node that serves them.
func selfRegistration(cfg *config.Config) *api.AgentServiceRegistration {
	port := cfg.Ports.HTTP
	if cfg.Server.Enabled {
		port = cfg.Ports.GRPC // clients discover servers through this port
	}
	addr := cfg.AdvertiseAddr
	if addr == "" && cfg.BindAddr != "0.0.0.0" {
		addr = cfg.BindAddr
	}
	checkHost := cfg.ClientAddr // where the HTTP API listens
	if ip := net.ParseIP(checkHost); ip == nil || ip.IsUnspecified() {
		checkHost = "127.0.0.1"
	}
	return &api.AgentServiceRegistration{
		ID:      "nullnet-" + cfg.NodeName,
		Name:    serverconn.ConsulServiceName,
		Tags:    cfg.Roles(),
		Port:    port,
		Address: addr,
		Meta: map[string]string{
			MetaNode:     cfg.NodeName,
			MetaUnderlay: cfg.AdvertiseAddr,
			MetaHTTPPort: strconv.Itoa(cfg.Ports.HTTP),
			MetaGRPCPort: strconv.Itoa(cfg.Ports.GRPC),
			MetaVersion:  version.Version,
		},
		Check: selfCheck(cfg, net.JoinHostPort(checkHost, strconv.Itoa(cfg.Ports.HTTP))),
	}
}

// selfCheck is the agent's health check in Consul: its HTTP API answering GET /v1/agent/health,
// the one route that needs no client certificate. With TLS the check speaks HTTPS and skips
// verifying the agent's certificate: it asks whether the agent answers, not who it is. (A plain
// TCP check made every agent log a TLS handshake error every interval.)
func selfCheck(cfg *config.Config, addr string) *api.AgentServiceCheck {
	c := &api.AgentServiceCheck{Name: "nullnet agent HTTP API", Interval: "10s", Timeout: "2s",
		DeregisterCriticalServiceAfter: "10m", HTTP: fmt.Sprintf("http://%s%s", addr, HealthPath)}
	if cfg.TLS.CertFile != "" {
		c.HTTP = fmt.Sprintf("https://%s%s", addr, HealthPath)
		c.TLSSkipVerify = true
	}
	return c
}

// keepRegistered registers the agent in its local Consul agent and re-registers whenever the
// registration disappears (a restarted dev agent loses it), until ctx ends; then deregisters,
// unless keep says the stop leaves the node's tunnels (and so its registrations) in place.
func keepRegistered(ctx context.Context, client *api.Client, reg *api.AgentServiceRegistration, keep func() bool, logger hclog.Logger) {
	logger = logger.Named("consul")
	registered := false
	failures := 0
	for {
		_, _, err := client.Agent().Service(reg.ID, nil)
		if err != nil || !registered {
			if err := client.Agent().ServiceRegister(reg); err != nil {
				failures++
				if failures == 1 {
					logger.Warn("cannot register the agent in Consul; retrying", "error", err)
				}
			} else {
				if failures > 0 || !registered {
					logger.Info("agent registered in Consul", "service", reg.Name, "id", reg.ID, "tags", reg.Tags)
				}
				registered, failures = true, 0
			}
		}
		delay := 15 * time.Second
		if failures > 0 {
			delay = retry.Backoff(100*time.Millisecond, 10*time.Second, failures)
		}
		select {
		case <-ctx.Done():
			// A node that keeps its tunnels across a restart stays registered (its check goes
			// critical until it is back): replicas registered by others (Nomad) are tied to a
			// nullnet node through this registration, and losing it would end their sessions.
			if registered && !keep() {
				dctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = client.Agent().ServiceDeregisterOpts(reg.ID, (&api.QueryOptions{}).WithContext(dctx))
				cancel()
			}
			return
		case <-time.After(delay):
		}
	}
}
