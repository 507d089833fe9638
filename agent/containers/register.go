package containers

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/lib/retry"
)

// Meta keys on container replica registrations. MetaNode, MetaStack and MetaProtocol equal
// those of host services (agent/client), so the server matches container replicas to their
// node the same way.
const (
	MetaNode      = "nullnet-node"
	MetaStack     = "nullnet-stack"
	MetaProtocol  = "nullnet-protocol"
	MetaContainer = "nullnet-container"
	MetaSuspended = "nullnet-suspended"
	ContainerTag  = "nullnet-container"
)

// ServiceID is the Consul service ID of the container with engine ID id on node: derived from
// the container ID, so an agent restart re-adopts the same registration.
func ServiceID(node, id string) string { return "nullnet-container-" + node + "-" + short(id) }

func stateCheckID(sid string) string { return sid + ":state" }

// stateTTL bounds how long a registration stays passing after the agent stopped refreshing it.
const (
	refreshEvery = 10 * time.Second
	stateTTL     = 3 * refreshEvery
)

// Registration is the Consul entry of container replica r on node.
func Registration(node string, r Replica) *api.AgentServiceRegistration {
	sid := ServiceID(node, r.ID)
	meta := map[string]string{MetaNode: node, MetaContainer: r.Name, MetaStack: r.Spec.Stack, MetaProtocol: r.Spec.Protocol}
	if r.State == StatePaused {
		meta[MetaSuspended] = "true"
	}
	addr := ""
	if a := r.Address(); a.IsValid() {
		addr = a.String()
	}
	status, _ := health(r)
	return &api.AgentServiceRegistration{
		ID: sid, Name: r.Spec.Service, Tags: []string{ContainerTag}, Port: r.Spec.Port, Address: addr, Meta: meta,
		Check: &api.AgentServiceCheck{
			CheckID: stateCheckID(sid),
			Name:    "container state",
			Notes:   "Set by the nullnet agent from the Docker Engine: running or paused is passing, exited is critical.",
			TTL:     stateTTL.String(),
			Status:  status,
		},
	}
}

// health is the state check's status and output: exited, or running without an address on
// any Docker network (network "none", "host"), is critical (nothing a proxy could dial).
func health(r Replica) (string, string) {
	switch {
	case r.State == StateExited:
		return api.HealthCritical, "container exited"
	case !r.Address().IsValid():
		return api.HealthCritical, "container " + string(r.State) + " but has no address on a Docker network"
	}
	return api.HealthPassing, "container " + string(r.State)
}

// Registrar keeps the watcher's replicas registered in the local Consul agent.
type Registrar struct {
	Consul  *api.Client
	Node    string
	Watcher *Watcher
	Logger  hclog.Logger

	registered map[string]*api.AgentServiceRegistration
}

// Run reconciles on every change and every refreshEvery (TTL refresh, Consul restarts) until
// ctx ends. keep, asked at the end, says whether to leave registrations in place (an agent
// restart re-adopts them); otherwise they are deregistered.
func (g *Registrar) Run(ctx context.Context, keep func() bool) {
	if g.Logger == nil {
		g.Logger = hclog.NewNullLogger()
	}
	g.registered = map[string]*api.AgentServiceRegistration{}
	failures := 0
	for {
		delay := refreshEvery
		if g.Watcher.Synced() {
			if err := g.reconcile(ctx); err != nil && ctx.Err() == nil {
				failures++
				if failures == 1 || failures%10 == 0 {
					g.Logger.Warn("registering container replicas in Consul failed; retrying", "error", err, "failures", failures)
				}
				delay = retry.Backoff(100*time.Millisecond, refreshEvery, failures)
			} else {
				failures = 0
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if !keep() {
				g.deregisterAll()
			}
			return
		case <-g.Watcher.Changes():
			t.Stop()
		case <-t.C:
		}
	}
}

func (g *Registrar) reconcile(ctx context.Context) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	current, err := g.Consul.Agent().ServicesWithFilterOpts(fmt.Sprintf("Meta[%q] == %q", MetaNode, g.Node), q)
	if err != nil {
		return fmt.Errorf("listing services of the local Consul agent: %w", err)
	}
	var errs []string
	desired := map[string]bool{}
	for _, r := range g.Watcher.Replicas() {
		reg := Registration(g.Node, r)
		desired[reg.ID] = true
		if _, present := current[reg.ID]; !present || !reflect.DeepEqual(g.registered[reg.ID], reg) {
			if err := g.Consul.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
				errs = append(errs, fmt.Sprintf("register %s: %v", r.Name, err))
				continue
			}
			g.registered[reg.ID] = reg
			status, out := health(r)
			// Consul keeps a re-registered TTL check's old status: set the state explicitly.
			if err := g.Consul.Agent().UpdateTTLOpts(stateCheckID(reg.ID), out, status, q); err != nil {
				errs = append(errs, fmt.Sprintf("state of %s: %v", r.Name, err))
			}
			g.Logger.Info("container replica registered in Consul", "service", r.Spec.Service, "container", r.Name,
				"address", reg.Address, "port", r.Spec.Port, "state", r.State)
			continue
		}
		// Refresh the TTL (the registration carries the status; the TTL keeps it from expiring).
		status, out := health(r)
		if err := g.Consul.Agent().UpdateTTLOpts(stateCheckID(reg.ID), out, status, q); err != nil {
			errs = append(errs, fmt.Sprintf("refresh %s: %v", r.Name, err))
		}
	}
	for id := range current {
		if desired[id] || !strings.HasPrefix(id, ServiceID(g.Node, "")) {
			continue
		}
		if err := g.Consul.Agent().ServiceDeregisterOpts(id, q); err != nil {
			errs = append(errs, fmt.Sprintf("deregister %s: %v", id, err))
			continue
		}
		delete(g.registered, id)
		g.Logger.Info("container replica deregistered from Consul", "id", id, "container", current[id].Meta[MetaContainer])
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// deregisterAll removes every container replica of this node (leave): those this run
// registered and those an earlier run left registered (a restart that kept them) that this run
// had not yet reconciled, as host services do.
func (g *Registrar) deregisterAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	ids := make(map[string]bool, len(g.registered))
	for id := range g.registered {
		ids[id] = true
	}
	if current, err := g.Consul.Agent().ServicesWithFilterOpts(fmt.Sprintf("Meta[%q] == %q", MetaNode, g.Node), q); err == nil {
		for id := range current {
			if strings.HasPrefix(id, ServiceID(g.Node, "")) {
				ids[id] = true
			}
		}
	} else {
		g.Logger.Warn("listing container replicas at leave failed; deregistering those this run registered", "error", err)
	}
	for id := range ids {
		if err := g.Consul.Agent().ServiceDeregisterOpts(id, q); err != nil {
			g.Logger.Warn("deregistering a container replica at shutdown failed", "id", id, "error", err)
		}
	}
}
