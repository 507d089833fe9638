package client

import (
	"context"
	"os"

	"github.com/nullnet/nullnet/agent/containers"
	"github.com/nullnet/nullnet/config"
)

// dockerSocket is where the local Docker Engine answers unless DOCKER_HOST says otherwise.
const dockerSocket = "/var/run/docker.sock"

// containerReplicasWanted says whether to watch the Docker Engine: when one is there to
// watch (its socket, or DOCKER_HOST) or the config names containers (then a missing engine is
// worth the warnings).
func containerReplicasWanted(cfg *config.Config) bool {
	if len(cfg.Client.Containers) > 0 || os.Getenv("DOCKER_HOST") != "" {
		return true
	}
	_, err := os.Stat(dockerSocket)
	return err == nil
}

func namedContainers(cfg *config.Config) map[string]containers.Spec {
	out := make(map[string]containers.Spec, len(cfg.Client.Containers))
	for _, c := range cfg.Client.Containers {
		out[c.Name] = containers.Spec{Service: c.Service, Port: c.Port, Protocol: c.Protocol, Stack: c.Stack}
	}
	return out
}

// runContainers registers the Docker containers that are replicas (labels or config) in the
// local Consul agent until ctx ends, next to the host services and with the same stop rule.
func (c *Client) runContainers(ctx context.Context) {
	cfg := c.agentConfig()
	w, err := containers.New(containers.Config{Named: namedContainers(cfg), Logger: c.logger.Named("containers")})
	if err != nil {
		c.logger.Warn("container replicas disabled: no Docker Engine client", "error", err)
		return
	}
	c.mu.Lock()
	c.containers = w
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	reg := &containers.Registrar{Consul: c.cfg.Consul, Node: cfg.NodeName, Watcher: w, Logger: c.logger.Named("containers")}
	reg.Run(ctx, c.KeepsOnStop)
	<-done
}

// reloadContainers passes a new config's container blocks to the watcher (SIGHUP).
func (c *Client) reloadContainers(cfg *config.Config) {
	c.mu.Lock()
	w := c.containers
	c.mu.Unlock()
	if w != nil {
		w.SetNamed(namedContainers(cfg))
	}
}
