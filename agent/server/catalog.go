package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/config"
	"github.com/nullnet/nullnet/lib/retry"
)

// catalogView is the definitions as Consul holds them: every definition instance, from any node.
type catalogView struct {
	defs []Definition
	// invalid lists tagged instances whose meta could not be read, with the reason.
	invalid map[string]string
	// complete is false while the leader is still writing a change (the definitions node
	// does not hold the set its meta announces, see consul.NodeState.Complete).
	complete bool
	// have and want count the definitions node's services against the announced count.
	have, want int
	// policiesPending counts definitions whose policy document is not in KV as announced.
	policiesPending int
}

// servicesAnswer is one answer of the services watch (consulwatch.go): the names on every node
// but DefinitionsNode, and the definitions registered there (foreign: a hand registration,
// another cluster), read in the same query so that a failure fails both.
type servicesAnswer struct {
	names   servicesView
	foreign []*api.CatalogService
}

// queryServicesAndForeign lists the service names off DefinitionsNode, then reads the foreign
// definitions among them (usually none, so usually no further request).
func (s *Server) queryServicesAndForeign(ctx context.Context, index uint64, wait time.Duration) (servicesAnswer, uint64, error) {
	names, idx, err := s.queryServices(ctx, index, wait)
	if err != nil {
		return servicesAnswer{}, 0, err
	}
	ans := servicesAnswer{names: names}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if !slices.Contains(names[name], DefinitionTag) {
			continue
		}
		q := (&api.QueryOptions{Filter: fmt.Sprintf("Node != %q", DefinitionsNode)}).WithContext(ctx)
		instances, meta, err := s.cfg.Consul.Catalog().Service(name, DefinitionTag, q)
		what := "reading definitions of " + name
		if err != nil {
			return servicesAnswer{}, 0, consul.QueryError(what, consul.ACLAllRead, err)
		}
		if err := consul.CheckFiltered(meta, what, consul.ACLAllRead); err != nil {
			return servicesAnswer{}, 0, err
		}
		ans.foreign = append(ans.foreign, instances...)
	}
	return ans, idx, nil
}

// definitionsView combines the definitions node and the foreign definitions.
func definitionsView(own *consul.NodeState, foreign []*api.CatalogService) catalogView {
	view := catalogView{invalid: map[string]string{}, complete: own.Complete(), have: len(own.Services), want: own.Expected()}
	add := func(inst *api.CatalogService) {
		d, err := definitionFromCatalog(inst)
		if err != nil {
			view.invalid[inst.Node+"/"+inst.ServiceID] = err.Error()
			return
		}
		view.defs = append(view.defs, d)
	}
	for _, id := range slices.Sorted(maps.Keys(own.Services)) {
		a := own.Services[id]
		if a == nil {
			continue
		}
		add(&api.CatalogService{Node: DefinitionsNode, ServiceID: a.ID, ServiceName: a.Service,
			ServiceTags: a.Tags, ServiceMeta: a.Meta, CreateIndex: a.CreateIndex})
	}
	for _, inst := range foreign {
		if inst != nil {
			add(inst)
		}
	}
	return view
}

// definitionFromCatalog reads a definition from its catalog entry (see the Meta* constants).
func definitionFromCatalog(c *api.CatalogService) (Definition, error) {
	d := Definition{Service: c.ServiceName, Stack: c.ServiceMeta[MetaStack], Protocol: c.ServiceMeta[MetaProtocol],
		CreateIndex: c.CreateIndex}
	if d.Service == "" {
		return d, errors.New("no service name")
	}
	if d.Protocol == "" {
		d.Protocol = config.ProtocolHTTP
	}
	switch d.Protocol {
	case config.ProtocolHTTP, config.ProtocolTCP, config.ProtocolUDP, config.ProtocolTLS:
	default:
		return d, fmt.Errorf("unknown %s %q", MetaProtocol, d.Protocol)
	}
	if p := c.ServiceMeta[MetaListenPort]; p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return d, fmt.Errorf("invalid %s %q", MetaListenPort, p)
		}
		d.ListenPort = n
	}
	if t, ok := c.ServiceMeta[MetaTimeout]; ok {
		n, err := strconv.ParseUint(t, 10, 32)
		if err != nil {
			return d, fmt.Errorf("invalid %s %q: want whole seconds", MetaTimeout, t)
		}
		d.EntryPoint, d.Timeout = true, time.Duration(n)*time.Second
	}
	if a, ok := c.ServiceMeta[servicepolicy.MetaDigest]; ok {
		if !validDigest(a) {
			return d, fmt.Errorf("invalid %s %.80q", servicepolicy.MetaDigest, a)
		}
		d.announced = a
	}
	return d, nil
}

// definitionMeta is the catalog form of a stack service (the inverse of definitionFromCatalog).
func definitionMeta(svc config.StackService) map[string]string {
	m := map[string]string{MetaStack: svc.Stack, MetaProtocol: svc.Protocol}
	if svc.ListenPort > 0 {
		m[MetaListenPort] = strconv.Itoa(svc.ListenPort)
	}
	if svc.EntryPoint {
		m[MetaTimeout] = strconv.FormatInt(int64(svc.Timeout/time.Second), 10)
	}
	if _, digest := servicepolicy.Encode(svc.Policy); digest != "" {
		m[servicepolicy.MetaDigest] = digest
	}
	return m
}

// catalogServices is what the mirror keeps in Consul for a validated stack set.
func catalogServices(set *config.StackSet) []consul.CatalogService {
	var out []consul.CatalogService
	for _, svc := range set.Services() {
		cs := consul.CatalogService{
			ID:   "nullnet-def-" + svc.Stack + "-" + svc.Name,
			Name: svc.Name,
			Tags: []string{DefinitionTag},
			Meta: definitionMeta(svc),
		}
		// The policy travels as a KV document in the same transaction as the definition: an
		// allow-list of a thousand CIDRs does not fit a 512-byte meta value.
		if value, _ := servicepolicy.Encode(svc.Policy); value != nil {
			cs.KV = &consul.KVEntry{Key: servicepolicy.Key(svc.Stack, svc.Name), Value: value}
		}
		out = append(out, cs)
	}
	return out
}

// settleAfterReset is how long, after Consul's index went backwards (an agent that came back
// without its data, or a snapshot restore), a table that lost entries is held back: the leader
// re-registers every definition within about a second, and proxies should not close listeners
// for an intermediate empty or partial catalog.
const settleAfterReset = 5 * time.Second

// incompleteHold is how long an incomplete definitions node (the leader between two
// transactions of one change) holds the table back. The leader finishes 10,000 definitions in
// about a second; a leader that died halfway is replaced within the lock TTL and rewrites the
// whole announcement. Past this, nobody is finishing the change (no server has stacks, or a
// hand edit): the table follows what Consul has, with a warning.
const incompleteHold = time.Minute

// incompleteReadInterval spaces the reads of the definitions node while the leader is writing.
const incompleteReadInterval = 400 * time.Millisecond

// servicesMinInterval spaces the reads of the service names (consulwatch.go).
const servicesMinInterval = 500 * time.Millisecond

// catalogState is the watch's memory between answers.
type catalogState struct {
	mu              sync.Mutex
	reported        map[string]bool // conflicts already reported, by key
	reportedInvalid map[string]bool // invalid instances already logged
	first           bool
	lastIndex       uint64
	holdUntil       time.Time
	incompleteUntil time.Time   // zero while complete
	pending         *resolved   // an answer held back (settle window or incomplete set)
	timer           *time.Timer // decides again on pending when a window ends
	timerAt         time.Time   // when timer fires

	own     *consul.NodeState     // the definitions node as last read (nil before)
	foreign []*api.CatalogService // foreign definitions as last read
	known   bool                  // the services watch answered at least once

	kv                map[string]policyDoc // policy documents by key (policies.go)
	reportedBadPolicy map[string]bool      // unreadable documents already logged, by key@digest
}

// resolved is one catalog answer turned into definitions and a table.
type resolved struct {
	defs     map[string]Definition
	table    []Mapping
	index    uint64
	complete bool
	// policiesPending counts definitions whose policy document did not match (policies.go).
	policiesPending int
}

// watchCatalog keeps the definitions and the port table in line with Consul until ctx ends,
// with two blocking queries (see consulwatch.go); the services answer also goes to
// onServices (the replica watcher). During an outage consul.Watch delivers nothing, so the
// last table stays in force.
func (s *Server) watchCatalog(ctx context.Context, onServices func(servicesView, uint64)) {
	st := &catalogState{reported: map[string]bool{}, reportedInvalid: map[string]bool{}, first: true}
	defer func() {
		st.mu.Lock()
		if st.timer != nil {
			st.timer.Stop()
			st.timer = nil
		}
		st.pending = nil
		st.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// MinInterval: this query wakes on every service write in the cluster (the leader's
		// transactions included); a burst is read a few times, not once per write.
		consul.Watch(ctx, consul.WatchConfig{Name: "catalog services", Logger: s.logger, OnError: s.aclReporter("catalog services"),
			MinInterval: servicesMinInterval},
			s.queryServicesAndForeign, func(ans servicesAnswer, index uint64) {
				st.mu.Lock()
				// This query wakes on every service write in the cluster: resolve again only
				// when the foreign definitions moved.
				if !st.known || !sameInstances(st.foreign, ans.foreign) {
					st.foreign, st.known = ans.foreign, true
					s.recompute(st, false)
				}
				st.mu.Unlock()
				if onServices != nil {
					onServices(ans.names, index)
				}
			})
	}()
	// While the leader is writing a change (the node is incomplete), every transaction wakes the
	// query; reading the whole node after each one would compete with the writes for Consul's
	// CPU, so the next read waits a little: intermediate states are never published anyway.
	incomplete := false
	wg.Add(1)
	go func() {
		defer wg.Done()
		consul.Watch(ctx, consul.WatchConfig{Name: "policies", Logger: s.logger, OnError: s.aclReporter("policies")},
			s.queryPolicies, func(docs map[string]policyDoc, _ uint64) {
				st.mu.Lock()
				if st.kv == nil || !samePolicyDocs(st.kv, docs) {
					st.kv = docs
					s.recompute(st, false)
				}
				st.mu.Unlock()
				if s.mirror != nil {
					s.mirror.KVChanged() // the leader repairs a hand edit
				}
			})
	}()
	consul.Watch(ctx, consul.WatchConfig{Name: "definitions", Logger: s.logger, OnError: s.aclReporter("definitions")},
		func(ctx context.Context, index uint64, wait time.Duration) (*consul.NodeState, uint64, error) {
			if incomplete && !retry.Sleep(ctx, incompleteReadInterval) {
				return nil, 0, ctx.Err()
			}
			st, idx, err := consul.ReadNode(ctx, s.cfg.Consul, DefinitionsNode, DefinitionTag, index, wait)
			if err != nil && s.mirror != nil {
				s.mirror.Observe(nil)
			}
			incomplete = err == nil && !st.Complete()
			return st, idx, err
		},
		func(own *consul.NodeState, index uint64) {
			if s.mirror != nil {
				s.mirror.Observe(own) // the leader's mirror compares with the same answers
			}
			st.mu.Lock()
			if index < st.lastIndex {
				st.holdUntil = time.Now().Add(settleAfterReset)
				s.logger.Warn("Consul's index went backwards (restarted without its data or restored); holding back removals while definitions are re-registered",
					"old_index", st.lastIndex, "new_index", index, "up_to", settleAfterReset)
			}
			st.lastIndex = index
			st.own = own
			s.recompute(st, true)
			st.mu.Unlock()
		})
	wg.Wait()
}

// recompute resolves the current answers and publishes, unless a window holds them back.
// ownChanged is false when only the foreign definitions moved. Called with st.mu held.
func (s *Server) recompute(st *catalogState, ownChanged bool) {
	if st.own == nil || !st.known {
		return // a table needs both answers: never publish half of the truth
	}
	view := definitionsView(st.own, st.foreign)
	s.joinPolicies(st, &view)
	defs, table, conflicts := resolveDefinitions(view.defs)
	s.reportConflicts(st, conflicts, view.invalid)
	now := time.Now()
	switch {
	case view.complete:
		if !st.incompleteUntil.IsZero() {
			s.logger.Info("definitions complete in Consul", "definitions", view.have)
		}
		st.incompleteUntil = time.Time{}
	case st.incompleteUntil.IsZero():
		st.incompleteUntil = now.Add(incompleteHold)
		s.logger.Info("the leader is writing definitions into Consul; holding the port table until the set is complete",
			"have", view.have, "announced", view.want, "policies_pending", view.policiesPending)
	case ownChanged:
		s.logger.Debug("definitions still incomplete", "have", view.have, "announced", view.want,
			"policies_pending", view.policiesPending)
	}
	s.decide(st, resolved{defs: defs, table: table, index: st.lastIndex, complete: view.complete,
		policiesPending: view.policiesPending})
}

// decide publishes res, or keeps it pending while the leader is writing (incomplete set) or,
// shortly after a Consul state reset, while it would drop published entries (see
// settleAfterReset). Called with st.mu held.
func (s *Server) decide(st *catalogState, res resolved) {
	now := time.Now()
	var until time.Time
	if !res.complete && now.Before(st.incompleteUntil) {
		until = st.incompleteUntil
	}
	if now.Before(st.holdUntil) && !s.covers(res) && st.holdUntil.After(until) {
		until = st.holdUntil
	}
	if until.IsZero() {
		if !res.complete {
			s.logger.Warn("definitions in Consul are still not the set the leader announced; publishing what Consul has",
				"after", incompleteHold, "policies_pending", res.policiesPending,
				"note", "a definition whose policy document is missing keeps its previous policy, or stays unpublished")
		} else if st.pending != nil && now.After(st.holdUntil) && !st.holdUntil.IsZero() && !s.covers(res) {
			s.logger.Warn("definitions did not come back within the settle window; publishing what Consul has")
		}
		st.pending = nil
		s.applyCatalog(st, res)
		return
	}
	st.pending = &res
	if st.timer != nil && until.Before(st.timerAt) {
		st.timer.Stop() // a window that ends sooner (a reset during a write): decide then
		st.timer = nil
	}
	if st.timer == nil {
		var t *time.Timer
		t = time.AfterFunc(until.Sub(now), func() {
			st.mu.Lock()
			defer st.mu.Unlock()
			if st.timer != t {
				return // stopped or replaced while this callback waited for the lock
			}
			st.timer = nil
			if st.pending != nil {
				s.decide(st, *st.pending)
			}
		})
		st.timer, st.timerAt = t, until
	}
}

// covers reports whether res keeps every published definition and port mapping.
func (s *Server) covers(res resolved) bool {
	cur, _, _ := s.defs.All()
	for _, d := range cur {
		if _, ok := res.defs[d.Service]; !ok {
			return false
		}
	}
	table, _, _ := s.table.snapshot()
	have := map[string]Mapping{}
	for _, m := range res.table {
		have[m.Protocol+"/"+m.Service] = m
	}
	for _, m := range table {
		if h, ok := have[m.Protocol+"/"+m.Service]; !ok || !h.same(m) {
			return false
		}
	}
	return true
}

// applyCatalog publishes definitions and table. Called with st.mu held.
func (s *Server) applyCatalog(st *catalogState, res resolved) {
	// The first answer is always set, even when empty: it turns "unknown" into "known".
	if cur, _, _ := s.defs.All(); st.first || !sameDefinitions(cur, res.defs) {
		s.defs.Set(res.defs)
	}
	st.first = false
	old, _, _ := s.table.snapshot()
	if version, changed := s.table.publish(res.table); changed {
		s.logger.Info("port table published", "version", version, "size", len(portsOnly(res.table)),
			"consul_index", res.index, "changes", tableDiff(old, res.table))
	}
}

// reportConflicts emits port_mapping_conflict once per conflict and logs invalid definitions
// once each. Called with st.mu held.
func (s *Server) reportConflicts(st *catalogState, conflicts []Conflict, invalid map[string]string) {
	now := map[string]bool{}
	for _, c := range conflicts {
		now[c.Key()] = true
		if st.reported[c.Key()] {
			continue
		}
		fields := map[string]string{"service": c.Loser.Service, "stack": c.Loser.Stack,
			"winner_service": c.Winner.Service, "winner_stack": c.Winner.Stack}
		if c.Port {
			fields["protocol"] = c.Loser.Protocol
			fields["listen_port"] = strconv.Itoa(c.Loser.ListenPort)
		}
		s.events.Emit(events.Event{Kind: events.PortMappingConflict, Severity: events.Warning,
			Message: c.String(), Fields: fields})
	}
	st.reported = now
	seen := map[string]bool{}
	for k, why := range invalid {
		seen[k] = true
		if !st.reportedInvalid[k] {
			s.logger.Warn("ignoring a definition with invalid meta", "instance", k, "reason", why)
		}
	}
	st.reportedInvalid = seen
}

// sameDefinitions compares the current set with a new one, ignoring nothing: a changed timeout
// or CreateIndex (re-registration) is a change for the session code.
func sameDefinitions(cur []Definition, next map[string]Definition) bool {
	if len(cur) != len(next) {
		return false
	}
	for _, d := range cur {
		if n, ok := next[d.Service]; !ok || !n.Equal(d) {
			return false
		}
	}
	return true
}

// sameInstances compares two reads of catalog instances by identity and modification.
func sameInstances(a, b []*api.CatalogService) bool {
	return slices.EqualFunc(a, b, func(x, y *api.CatalogService) bool {
		return x.Node == y.Node && x.ServiceID == y.ServiceID && x.ModifyIndex == y.ModifyIndex
	})
}
