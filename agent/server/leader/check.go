package leader

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/lib/retry"
)

// The lock session is tied to a TTL check on the local Consul agent's node, which this server
// keeps passing. When the server dies (kill -9, a hung process), the check turns critical after
// CheckTTL and Consul invalidates the session at once, instead of after up to 2×SessionTTL.

// startCheck registers the check as passing and waits until the catalog says so: a session
// refers to checks as the Consul servers see them, and the agent syncs a new check shortly after
// registering it.
func (l *Leadership) startCheck(ctx context.Context) error {
	if l.checkID == "" {
		return nil
	}
	agent := l.cfg.Client.Agent()
	err := agent.CheckRegister(&api.AgentCheckRegistration{
		ID: l.checkID, Name: "nullnet leader candidate " + l.cfg.Name,
		Notes:             "kept passing by the nullnet server; its lock session dies when this check fails",
		AgentServiceCheck: api.AgentServiceCheck{TTL: l.cfg.CheckTTL.String(), Status: api.HealthPassing},
	})
	if err != nil {
		return fmt.Errorf("registering check %s: %w", l.checkID, err)
	}
	if err := agent.UpdateTTL(l.checkID, "", api.HealthPassing); err != nil {
		return fmt.Errorf("passing check %s: %w", l.checkID, err)
	}
	self, err := agent.NodeName()
	if err != nil {
		return fmt.Errorf("reading the Consul agent's node: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		checks, _, err := l.cfg.Client.Health().Node(self, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil {
			for _, c := range checks {
				if c.CheckID == l.checkID && c.Status == api.HealthPassing {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("check %s not passing in the catalog after 10s (last error: %v)", l.checkID, err)
		}
		if !retry.Sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// heartbeat keeps the check passing until ctx ends; then it deregisters it, so a server that
// stopped cleanly leaves no critical check behind.
func (l *Leadership) heartbeat(ctx context.Context) {
	if l.checkID == "" {
		return
	}
	t := time.NewTicker(l.cfg.CheckTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = l.cfg.Client.Agent().CheckDeregister(l.checkID)
			return
		case <-t.C:
			if err := l.cfg.Client.Agent().UpdateTTL(l.checkID, "", api.HealthPassing); err != nil {
				l.logger.Debug("heartbeat of the leader check failed", "check", l.checkID, "error", err)
			}
		}
	}
}
