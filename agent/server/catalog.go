package server

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// catalogView is one answer from Consul: every definition instance, from any node.
type catalogView struct {
	defs []Definition
	// invalid lists tagged instances whose meta could not be read, with the reason.
	invalid map[string]string
}

// queryDefinitions reads every instance tagged DefinitionTag. It blocks on the catalog's service
// list (which moves when any service is added, changed or removed), then reads each tagged
// service. Any failure fails the whole answer, so a partial table is never built.
func (s *Server) queryDefinitions(ctx context.Context, index uint64, wait time.Duration) (catalogView, uint64, error) {
	cat := s.cfg.Consul.Catalog()
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	names, meta, err := cat.Services(q)
	if err != nil {
		return catalogView{}, 0, fmt.Errorf("listing catalog services: %w", err)
	}
	view := catalogView{invalid: map[string]string{}}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if !slices.Contains(names[name], DefinitionTag) {
			continue
		}
		instances, _, err := cat.Service(name, DefinitionTag, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return catalogView{}, 0, fmt.Errorf("reading definitions of %s: %w", name, err)
		}
		for _, inst := range instances {
			d, err := definitionFromCatalog(inst)
			if err != nil {
				view.invalid[inst.Node+"/"+inst.ServiceID] = err.Error()
				continue
			}
			view.defs = append(view.defs, d)
		}
	}
	return view, meta.LastIndex, nil
}

// definitionFromCatalog reads a definition from its catalog entry (see the Meta* constants).
func definitionFromCatalog(c *api.CatalogService) (Definition, error) {
	d := Definition{Service: c.ServiceName, Stack: c.ServiceMeta[MetaStack], Protocol: c.ServiceMeta[MetaProtocol],
		CreateIndex: c.CreateIndex}
	if d.Protocol == "" {
		d.Protocol = config.ProtocolHTTP
	}
	switch d.Protocol {
	case config.ProtocolHTTP, config.ProtocolTCP, config.ProtocolUDP:
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
	return m
}

// catalogServices is what the mirror keeps in Consul for a validated stack set.
func catalogServices(set *config.StackSet) []consul.CatalogService {
	var out []consul.CatalogService
	for _, svc := range set.Services() {
		out = append(out, consul.CatalogService{
			ID:   "nullnet-def-" + svc.Stack + "-" + svc.Name,
			Name: svc.Name,
			Tags: []string{DefinitionTag},
			Meta: definitionMeta(svc),
		})
	}
	return out
}

// settleAfterReset is how long, after Consul's index went backwards (an agent that came back
// without its data, or a snapshot restore), a table that lost entries is held back: the leader
// re-registers every definition within about a second, and proxies should not close listeners
// for an intermediate empty or partial catalog.
const settleAfterReset = 5 * time.Second

// catalogState is the watch's memory between answers.
type catalogState struct {
	mu              sync.Mutex
	reported        map[string]bool // conflicts already reported, by key
	reportedInvalid map[string]bool // invalid instances already logged
	first           bool
	lastIndex       uint64
	holdUntil       time.Time
	pending         *resolved   // an answer held back during the settle window
	timer           *time.Timer // publishes pending when the window ends
}

// resolved is one catalog answer turned into definitions and a table.
type resolved struct {
	defs  map[string]Definition
	table []Mapping
	index uint64
}

// watchCatalog keeps the definitions and the port table in line with Consul until ctx ends.
// During an outage consul.Watch delivers nothing, so the last table stays in force.
func (s *Server) watchCatalog(ctx context.Context) {
	st := &catalogState{reported: map[string]bool{}, reportedInvalid: map[string]bool{}, first: true}
	defer func() {
		st.mu.Lock()
		if st.timer != nil {
			st.timer.Stop()
		}
		st.pending = nil
		st.mu.Unlock()
	}()
	consul.Watch(ctx, consul.WatchConfig{Name: "definitions", Logger: s.logger},
		s.queryDefinitions, func(view catalogView, index uint64) { s.onCatalog(st, view, index) })
}

// onCatalog handles one answer: report conflicts, then publish, unless the answer lost entries
// shortly after a Consul state reset (see settleAfterReset).
func (s *Server) onCatalog(st *catalogState, view catalogView, index uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if index < st.lastIndex {
		st.holdUntil = time.Now().Add(settleAfterReset)
		s.logger.Warn("Consul's index went backwards (restarted without its data or restored); holding back removals while definitions are re-registered",
			"old_index", st.lastIndex, "new_index", index, "up_to", settleAfterReset)
	}
	st.lastIndex = index

	defs, table, conflicts := resolveDefinitions(view.defs)
	s.reportConflicts(st, conflicts, view.invalid)
	res := resolved{defs: defs, table: table, index: index}

	if wait := time.Until(st.holdUntil); wait > 0 && !s.covers(res) {
		st.pending = &res
		if st.timer == nil {
			st.timer = time.AfterFunc(wait, func() {
				st.mu.Lock()
				defer st.mu.Unlock()
				st.timer = nil
				if st.pending != nil {
					s.logger.Warn("definitions did not come back within the settle window; publishing what Consul has")
					s.applyCatalog(st, *st.pending)
					st.pending = nil
				}
			})
		}
		return
	}
	st.pending = nil
	s.applyCatalog(st, res)
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
	have := map[Mapping]bool{}
	for _, m := range res.table {
		have[m] = true
	}
	for _, m := range table {
		if !have[m] {
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
		s.logger.Info("port table published", "version", version, "size", len(res.table),
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
		if n, ok := next[d.Service]; !ok || n != d {
			return false
		}
	}
	return true
}
