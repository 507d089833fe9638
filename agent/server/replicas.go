package server

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/server/session"
	"github.com/nullnet/nullnet/agent/serverconn"
)

// replicaInstance is one Consul instance of a service, healthy or not.
type replicaInstance struct {
	session.Replica
	consulNode string
	// metaNode is the instance's own nullnet-node meta (host services of client agents).
	metaNode string
	passing  bool
}

// serviceReplicas is the last answer for one service.
type serviceReplicas struct {
	known     bool // at least one answer arrived
	instances []replicaInstance
	ready     chan struct{} // closed at the first answer
	cancel    context.CancelFunc
}

// replicaWatcher keeps, per service that can have sessions, the Consul instances and their
// health, with one blocking health query per service (only entry points and services asked
// for are watched), plus one watch of the "nullnet" service that maps Consul nodes to nullnet
// nodes.
type replicaWatcher struct {
	client   *api.Client
	logger   hclog.Logger
	onChange func(service string) // called after every change of a service's instances

	mu       sync.Mutex
	ctx      context.Context // set by run; nil before
	services map[string]*serviceReplicas
	nodes    map[string]string // consul node -> nullnet node name
	wg       sync.WaitGroup
}

func newReplicaWatcher(client *api.Client, logger hclog.Logger, onChange func(string)) *replicaWatcher {
	return &replicaWatcher{client: client, logger: logger, onChange: onChange,
		services: map[string]*serviceReplicas{}, nodes: map[string]string{}}
}

// run watches the nullnet agents until ctx ends and stops every service watch on the way out.
func (w *replicaWatcher) run(ctx context.Context) {
	w.mu.Lock()
	w.ctx = ctx
	w.mu.Unlock()
	consul.Watch(ctx, consul.WatchConfig{Name: "nullnet agents", Logger: w.logger},
		func(ctx context.Context, index uint64, wait time.Duration) ([]*api.CatalogService, uint64, error) {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
			out, meta, err := w.client.Catalog().Service(serverconn.ConsulServiceName, "", q)
			if err != nil {
				return nil, 0, fmt.Errorf("listing nullnet agents: %w", err)
			}
			return out, meta.LastIndex, nil
		},
		func(agents []*api.CatalogService, _ uint64) {
			m := map[string]string{}
			for _, a := range agents {
				if n := a.ServiceMeta[MetaNode]; n != "" {
					m[a.Node] = n
				}
			}
			w.mu.Lock()
			w.nodes = m
			names := make([]string, 0, len(w.services))
			for name := range w.services {
				names = append(names, name)
			}
			w.mu.Unlock()
			for _, name := range names {
				w.onChange(name) // node mapping moved: replicas may have appeared or gone
			}
		})
	w.mu.Lock()
	for _, s := range w.services {
		s.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// ensure starts watching service (idempotent) and returns a channel closed at its first answer.
// Before run has started it returns nil.
func (w *replicaWatcher) ensure(service string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.services[service]; s != nil {
		return s.ready
	}
	if w.ctx == nil || w.ctx.Err() != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(w.ctx)
	s := &serviceReplicas{ready: make(chan struct{}), cancel: cancel}
	w.services[service] = s
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.watchService(ctx, service, s)
	}()
	return s.ready
}

// retain stops the watches of services not in keep.
func (w *replicaWatcher) retain(keep map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, s := range w.services {
		if !keep[name] {
			s.cancel()
			delete(w.services, name)
		}
	}
}

func (w *replicaWatcher) watchService(ctx context.Context, service string, s *serviceReplicas) {
	consul.Watch(ctx, consul.WatchConfig{Name: "replicas of " + service, Logger: w.logger},
		func(ctx context.Context, index uint64, wait time.Duration) ([]*api.ServiceEntry, uint64, error) {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
			out, meta, err := w.client.Health().Service(service, "", false, q)
			if err != nil {
				return nil, 0, fmt.Errorf("reading instances of %s: %w", service, err)
			}
			return out, meta.LastIndex, nil
		},
		func(entries []*api.ServiceEntry, _ uint64) {
			var inst []replicaInstance
			for _, e := range entries {
				if slices.Contains(e.Service.Tags, DefinitionTag) {
					continue // a stack definition, not something that serves traffic
				}
				addr := e.Service.Address
				if addr == "" {
					addr = e.Node.Address
				}
				inst = append(inst, replicaInstance{
					Replica:    session.Replica{ID: e.Node.Node + "/" + e.Service.ID, Address: addr, Port: e.Service.Port},
					consulNode: e.Node.Node,
					metaNode:   e.Service.Meta[MetaNode],
					passing:    e.Checks.AggregatedStatus() == api.HealthPassing,
				})
			}
			sort.Slice(inst, func(i, j int) bool { return inst[i].ID < inst[j].ID })
			w.mu.Lock()
			if w.services[service] != s {
				w.mu.Unlock()
				return
			}
			s.instances = inst
			if !s.known {
				s.known = true
				close(s.ready)
			}
			w.mu.Unlock()
			w.onChange(service)
		})
}

// replicaView is the resolved state of one service's instances.
type replicaView struct {
	known bool
	// all instances with their nullnet node resolved (Node empty: not on a nullnet node).
	all []replicaInstance
}

// view resolves the nullnet node of each instance: its own meta, else its Consul node's agent.
func (w *replicaWatcher) view(service string) replicaView {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.services[service]
	if s == nil || !s.known {
		return replicaView{}
	}
	out := replicaView{known: true, all: make([]replicaInstance, len(s.instances))}
	for i, in := range s.instances {
		if in.metaNode != "" {
			in.Node = in.metaNode
		} else {
			in.Node = w.nodes[in.consulNode]
		}
		out.all[i] = in
	}
	return out
}

// candidates filters a view down to replicas a session may use; usable reports whether a
// nullnet node is acceptable (vxlan: it has a live control channel). why explains an empty result.
func (v replicaView) candidates(usable func(node string) bool) (out []session.Replica, why string) {
	var passing, onNullnet int
	for _, in := range v.all {
		if !in.passing {
			continue
		}
		passing++
		if in.Node == "" {
			continue
		}
		onNullnet++
		if usable(in.Node) {
			out = append(out, in.Replica)
		}
	}
	switch {
	case len(out) > 0:
		return out, ""
	case len(v.all) == 0:
		return nil, "no instance is registered in Consul"
	case passing == 0:
		return nil, fmt.Sprintf("%d instance(s) in Consul, none passing its health checks", len(v.all))
	case onNullnet == 0:
		return nil, fmt.Sprintf("%d passing instance(s), none on a node that runs a nullnet agent", passing)
	default:
		return nil, fmt.Sprintf("%d passing instance(s) on nullnet nodes, none with a live control channel", onNullnet)
	}
}

// status of a replica for session liveness: "" = healthy, else a teardown reason.
func (v replicaView) status(r session.Replica) string {
	for _, in := range v.all {
		if in.ID != r.ID {
			continue
		}
		if in.Node == "" || in.Node != r.Node {
			return session.ReasonReplicaGone
		}
		if !in.passing {
			return session.ReasonReplicaUnhealthy
		}
		return ""
	}
	return session.ReasonReplicaGone
}
