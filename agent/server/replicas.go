package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/server/session"
	"github.com/nullnet/nullnet/agent/serverconn"
	"github.com/nullnet/nullnet/lib/retry"
)

// replicaFetchers bounds the reads of changed services in flight, hence the connections they
// use next to the blocking queries.
const replicaFetchers = 2

// replicaResync is how often every watched service with instances is read again, whatever the
// watches said: an instance without a health check that appears next to checked ones, or one
// re-registered at another address without any check changing, moves neither the checks nor
// the tags of its service.
const replicaResync = 5 * time.Minute

// replicaInstance is one Consul instance of a service, healthy or not.
type replicaInstance struct {
	session.Replica
	consulNode string
	// metaNode is the instance's own nullnet-node meta (host services of client agents).
	metaNode string
	passing  bool
	// critical: Consul marks the instance critical (close_on_unhealthy ends its uses); a
	// warning is not passing (no new sessions) but not critical.
	critical bool
	// checked: the instance has a service check of its own, so its changes show in the checks
	// watch.
	checked bool
}

// serviceReplicas is the last answer for one service.
type serviceReplicas struct {
	known     bool // at least one answer arrived
	instances []replicaInstance
	// index is the Consul index of the answer the instances come from. Reads of one service
	// can overlap (the watcher's and a confirming read), and the names answer can be older
	// than a read: an answer older than what is applied is ignored, so a stale "no instance"
	// never replaces a fresher one (which would tear down the sessions just built on it).
	index uint64
	ready chan struct{} // closed at the first answer
	// confirmed is when a client's arrival last made the watcher read an empty service again,
	// confirming is closed when that read ends (replicas_confirm.go).
	confirmed  time.Time
	confirming chan struct{}
}

// checkless reports whether a change of some instance would not show in the checks watch.
func (s *serviceReplicas) checkless() bool {
	for _, in := range s.instances {
		if !in.checked {
			return true
		}
	}
	return false
}

// replicaWatcher keeps, per service that can have sessions (entry points and services asked
// for), the Consul instances and their health, plus the "nullnet" service that maps Consul
// nodes to nullnet nodes. It holds one blocking query of its own, on every health check in
// the cluster, and is handed the answers of the server's services watch (consulwatch.go); from
// the two it works out which services changed and reads only those, replicaFetchers at a time.
type replicaWatcher struct {
	client   *api.Client
	logger   hclog.Logger
	onChange func(service string) // called after every change of a service's instances
	onError  func(error, int)     // after a failed read, with the failures in a row

	mu       sync.Mutex
	started  bool
	services map[string]*serviceReplicas
	nodes    map[string]string // consul node -> nullnet node name
	// names is the last services answer (nil before the first): a watched name missing from
	// it has no instance anywhere, and is known empty without a read.
	names      servicesView
	namesIndex uint64 // the Consul index of names
	// svcChecks and nodeChecks fingerprint the checks by service name and by Consul node (node
	// checks count in every instance's health on that node).
	svcChecks  map[string]string
	nodeChecks map[string]string
	dirty      map[string]bool // services to read again; agentsName for the nullnet agents
	kick       chan struct{}
	// confirmSlot lets one confirming read run at a time (replicas_confirm.go).
	confirmSlot chan struct{}
}

// serfHealthCheck is the node check every Consul agent has.
const serfHealthCheck = "serfHealth"

// agentsName is the dirty-set key of the nullnet agents read.
const agentsName = serverconn.ConsulServiceName

func newReplicaWatcher(client *api.Client, logger hclog.Logger, onChange func(string), onError func(error, int)) *replicaWatcher {
	return &replicaWatcher{client: client, logger: logger, onChange: onChange, onError: onError,
		services: map[string]*serviceReplicas{}, nodes: map[string]string{}, dirty: map[string]bool{agentsName: true},
		kick: make(chan struct{}, 1), confirmSlot: make(chan struct{}, 1)}
}

func (w *replicaWatcher) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// run watches Consul's checks and reads what changed until ctx ends.
func (w *replicaWatcher) run(ctx context.Context) {
	w.mu.Lock()
	w.started = true
	w.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.fetchLoop(ctx) }()
	consul.Watch(ctx, consul.WatchConfig{Name: "health checks", Logger: w.logger, OnError: w.onError},
		func(ctx context.Context, index uint64, wait time.Duration) (api.HealthChecks, uint64, error) {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
			checks, meta, err := w.client.Health().State(api.HealthAny, q)
			if err != nil {
				return nil, 0, consul.QueryError("reading health checks", consul.ACLAllRead, err)
			}
			if err := consul.CheckFiltered(meta, "reading health checks", consul.ACLAllRead); err != nil {
				return nil, 0, err
			}
			if !slices.ContainsFunc(checks, func(c *api.HealthCheck) bool { return c.CheckID == serfHealthCheck }) {
				// As for the services watch: without a token Consul does not flag a filtered
				// answer, but every Consul agent's node carries serfHealth.
				return nil, 0, consul.SuspectFiltered(ctx, w.client, "reading health checks", consul.ACLAllRead,
					errors.New("the answer lacks every agent's serfHealth check (no token, or a token that cannot read nodes)"))
			}
			return checks, meta.LastIndex, nil
		},
		w.checksChanged)
	wg.Wait()
}

// fingerprints groups checks by service name and by node (node-level checks).
func fingerprints(checks api.HealthChecks) (bySvc, byNode map[string]string) {
	sorted := slices.DeleteFunc(slices.Clone(checks), func(c *api.HealthCheck) bool { return c == nil })
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Node != sorted[j].Node {
			return sorted[i].Node < sorted[j].Node
		}
		return sorted[i].CheckID < sorted[j].CheckID
	})
	svc, node := map[string]*strings.Builder{}, map[string]*strings.Builder{}
	for _, c := range sorted {
		m, key := svc, c.ServiceName
		if c.ServiceID == "" {
			m, key = node, c.Node
		}
		b := m[key]
		if b == nil {
			b = &strings.Builder{}
			m[key] = b
		}
		fmt.Fprintf(b, "%s/%s/%s=%s@%d;", c.Node, c.ServiceID, c.CheckID, c.Status, c.ModifyIndex)
	}
	bySvc, byNode = map[string]string{}, map[string]string{}
	for k, b := range svc {
		bySvc[k] = b.String()
	}
	for k, b := range node {
		byNode[k] = b.String()
	}
	return bySvc, byNode
}

// checksChanged marks the services whose checks, or whose nodes' checks, changed.
func (w *replicaWatcher) checksChanged(checks api.HealthChecks, _ uint64) {
	bySvc, byNode := fingerprints(checks)
	w.mu.Lock()
	changedNodes := map[string]bool{}
	for n := range mapsUnion(byNode, w.nodeChecks) {
		if byNode[n] != w.nodeChecks[n] {
			changedNodes[n] = true
		}
	}
	mark := func(name string, s *serviceReplicas) {
		if w.svcChecks[name] != bySvc[name] {
			w.dirty[name] = true
			return
		}
		if s == nil {
			return
		}
		for _, in := range s.instances {
			if changedNodes[in.consulNode] {
				w.dirty[name] = true
				return
			}
		}
	}
	for name, s := range w.services {
		if _, present := w.names[name]; present || w.names == nil {
			mark(name, s)
		}
	}
	if w.svcChecks[agentsName] != bySvc[agentsName] || len(changedNodes) > 0 {
		w.dirty[agentsName] = true
	}
	w.svcChecks, w.nodeChecks = bySvc, byNode
	w.mu.Unlock()
	w.poke()
}

func mapsUnion(a, b map[string]string) map[string]bool {
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// servicesChanged takes an answer of the server's services watch: a watched name that is
// gone has no instances left (no read needed); one that appeared, changed tags or has
// instances without checks is read again.
func (w *replicaWatcher) servicesChanged(names servicesView, index uint64) {
	var emptied []string
	w.mu.Lock()
	old := w.names
	w.names, w.namesIndex = names, index
	for name, s := range w.services {
		tags, present := names[name]
		oldTags, was := old[name]
		switch {
		case !present && index < s.index:
			w.dirty[name] = true // a read saw this service after this answer: ask again
		case !present:
			if !s.known || len(s.instances) > 0 {
				w.setLocked(name, s, nil, index)
				emptied = append(emptied, name)
			}
		case old == nil || !was || !slices.Equal(tags, oldTags) || !s.known || s.checkless():
			w.dirty[name] = true
		}
	}
	if t, ok := names[agentsName]; !ok || !slices.Equal(t, old[agentsName]) || old == nil {
		w.dirty[agentsName] = true
	}
	w.mu.Unlock()
	for _, name := range emptied {
		w.onChange(name)
	}
	w.poke()
}

// setLocked records a service's instances, read from an answer at Consul index index, and
// reports whether they changed. An answer older than the one applied is ignored.
func (w *replicaWatcher) setLocked(name string, s *serviceReplicas, inst []replicaInstance, index uint64) bool {
	if s.known && index < s.index {
		return false
	}
	changed := !s.known || !slices.Equal(s.instances, inst)
	s.instances, s.index = inst, index
	if !s.known {
		s.known = true
		close(s.ready)
	}
	return changed
}

// fetchLoop reads the dirty services, replicaFetchers at a time, until ctx ends.
func (w *replicaWatcher) fetchLoop(ctx context.Context) {
	resync := time.NewTicker(replicaResync)
	defer resync.Stop()
	var retryC <-chan time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-retryC:
		case <-resync.C:
			w.mu.Lock()
			for name := range w.services {
				if _, present := w.names[name]; present {
					w.dirty[name] = true
				}
			}
			w.dirty[agentsName] = true
			w.mu.Unlock()
		}
		retryC = nil
		w.mu.Lock()
		if w.names == nil {
			w.mu.Unlock()
			continue // the services watch has not answered: nothing can be judged yet
		}
		batch := slices.Sorted(maps.Keys(w.dirty))
		w.dirty = map[string]bool{}
		w.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		err := w.fetch(ctx, batch)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			d := retry.Backoff(100*time.Millisecond, 10*time.Second, failures)
			lvl := w.logger.Warn
			if failures > 1 {
				lvl = w.logger.Debug
			}
			lvl("reading replicas from Consul failed; keeping the last known state", "error", err, "retry_in", d)
			if w.onError != nil {
				w.onError(err, failures)
			}
			retryC = time.After(d)
			continue
		}
		if failures > 0 {
			w.logger.Info("reading replicas from Consul recovered", "after_failures", failures)
			failures = 0
		}
	}
}

// fetch reads every name in batch; a failed name is marked dirty again.
func (w *replicaWatcher) fetch(ctx context.Context, batch []string) error {
	jobs := make(chan string)
	var mu sync.Mutex
	var firstErr error
	var changed []string
	var wg sync.WaitGroup
	for range min(replicaFetchers, len(batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				var err error
				var did bool
				if name == agentsName {
					did, err = w.fetchAgents(ctx)
				} else {
					did, err = w.fetchService(ctx, name)
				}
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					w.mu.Lock()
					w.dirty[name] = true
					w.mu.Unlock()
				} else if did {
					changed = append(changed, name)
				}
				mu.Unlock()
			}
		}()
	}
	for _, name := range batch {
		select {
		case jobs <- name:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	for _, name := range changed {
		if name == agentsName {
			w.mu.Lock()
			all := slices.Collect(maps.Keys(w.services))
			w.mu.Unlock()
			for _, n := range all {
				w.onChange(n) // node mapping moved: replicas may have appeared or gone
			}
			continue
		}
		w.onChange(name)
	}
	return firstErr
}

// fetchAgents reads the "nullnet" service: which Consul node runs which nullnet node.
func (w *replicaWatcher) fetchAgents(ctx context.Context) (bool, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	agents, meta, err := w.client.Catalog().Service(serverconn.ConsulServiceName, "", q)
	if err != nil {
		return false, consul.QueryError("listing nullnet agents", consul.ACLAllRead, err)
	}
	if err := consul.CheckFiltered(meta, "listing nullnet agents", consul.ACLAllRead); err != nil {
		return false, err
	}
	m := agentNodes(agents)
	w.mu.Lock()
	defer w.mu.Unlock()
	if maps.Equal(m, w.nodes) {
		return false, nil
	}
	w.nodes = m
	return true, nil
}

// agentNodes maps Consul node to nullnet node from the instances of the "nullnet" service.
func agentNodes(agents []*api.CatalogService) map[string]string {
	m := map[string]string{}
	for _, a := range agents {
		if a == nil {
			continue
		}
		if n := a.ServiceMeta[MetaNode]; n != "" && a.Node != "" {
			m[a.Node] = n
		}
	}
	return m
}

// fetchService reads one service's instances with their health.
func (w *replicaWatcher) fetchService(ctx context.Context, service string) (bool, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	entries, meta, err := w.client.Health().Service(service, "", false, q)
	what := "reading instances of " + service
	if err != nil {
		return false, consul.QueryError(what, consul.ACLAllRead, err)
	}
	if err := consul.CheckFiltered(meta, what, consul.ACLAllRead); err != nil {
		return false, err
	}
	inst := replicaInstances(entries)
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.services[service]
	if s == nil {
		return false, nil // no longer watched
	}
	return w.setLocked(service, s, inst, meta.LastIndex), nil
}

// replicaInstances reads a service's health answer: every instance that can serve traffic,
// sorted by ID. Stack definitions (DefinitionTag) are not replicas; null entries, entries
// without a node or service, and instances whose port no connection can reach (outside
// 1-65535: a service registered without a port) are left out, and of two instances with one
// ID the first counts.
func replicaInstances(entries []*api.ServiceEntry) []replicaInstance {
	var inst []replicaInstance
	seen := map[string]bool{}
	for _, e := range entries {
		if e == nil || e.Node == nil || e.Service == nil || e.Service.Port < 1 || e.Service.Port > 65535 {
			continue
		}
		if slices.Contains(e.Service.Tags, DefinitionTag) {
			continue // a stack definition, not something that serves traffic
		}
		id := e.Node.Node + "/" + e.Service.ID
		if seen[id] {
			continue
		}
		seen[id] = true
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		checks := slices.DeleteFunc(slices.Clone(e.Checks), func(c *api.HealthCheck) bool { return c == nil })
		checked := false
		for _, c := range checks {
			checked = checked || c.ServiceID != ""
		}
		health := checks.AggregatedStatus()
		inst = append(inst, replicaInstance{
			Replica:    session.Replica{ID: id, Address: addr, Port: e.Service.Port},
			consulNode: e.Node.Node,
			metaNode:   e.Service.Meta[MetaNode],
			passing:    health == api.HealthPassing,
			critical:   health == api.HealthCritical,
			checked:    checked,
		})
	}
	sort.Slice(inst, func(i, j int) bool { return inst[i].ID < inst[j].ID })
	return inst
}

// ensure starts watching service (idempotent) and returns a channel closed at its first answer.
// Before run has started it returns nil.
func (w *replicaWatcher) ensure(service string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.services[service]; s != nil {
		return s.ready
	}
	if !w.started {
		return nil
	}
	s := &serviceReplicas{ready: make(chan struct{})}
	w.services[service] = s
	if _, present := w.names[service]; w.names != nil && !present {
		w.setLocked(service, s, nil, w.namesIndex) // no instance anywhere: known without a read
		return s.ready
	}
	w.dirty[service] = true
	w.poke()
	return s.ready
}

// retain stops watching services not in keep.
func (w *replicaWatcher) retain(keep map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name := range w.services {
		if !keep[name] {
			delete(w.services, name)
		}
	}
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
