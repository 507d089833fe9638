package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
)

// CatalogService is one service instance the mirror keeps registered on its node. The caller
// (the server) turns its own definitions into these, so this package knows nothing of stacks.
type CatalogService struct {
	ID   string
	Name string
	Tags []string
	Meta map[string]string
}

// MirrorConfig configures a Mirror.
type MirrorConfig struct {
	Client *api.Client
	Logger hclog.Logger
	// LockKey is the KV key of the leader lock; only the holder writes the catalog.
	LockKey string
	// Node is the virtual (external) node that holds every mirrored service.
	Node     string
	NodeMeta map[string]string
	// Tag marks the services the mirror owns: services on Node without it are never touched.
	Tag string
	// LockTTL is the lock session's TTL (default 15 s): how long a crashed leader blocks others.
	LockTTL time.Duration
	// OnLeadership is called with true when this mirror takes the lock and false when it loses
	// it (optional).
	OnLeadership func(leader bool)
	// OnWriteError is called when bringing the catalog in line failed, once per streak of
	// failures; the write is retried with backoff (optional).
	OnWriteError func(error)
	// OnSynced is called after every reconcile that left the catalog equal to the desired set,
	// with the number of writes it took (optional; used by tests and metrics).
	OnSynced func(writes int)
}

// Mirror makes the services carrying Tag on Node match a desired set, but only while it holds
// the leader lock, so that two servers with different stack files never fight. It watches the
// node with a blocking query, so drift (someone deleting a definition by hand, a Consul that
// lost its state) is repaired, and it writes nothing when the catalog already matches: a
// restart with unchanged stacks changes nothing in Consul.
type Mirror struct {
	cfg    MirrorConfig
	logger hclog.Logger
	leader atomic.Bool

	// ineligible is set while this server must not hold the lock (SetEligible); eligibility
	// (capacity 1) wakes Run when it changes.
	ineligible  atomic.Bool
	eligibility chan struct{}

	mu          sync.Mutex
	desired     map[string]CatalogService
	haveDesired bool
	kick        chan struct{} // capacity 1: "something changed, reconcile"
}

// NewMirror builds a mirror; call Set with the desired services and Run to start it.
func NewMirror(cfg MirrorConfig) (*Mirror, error) {
	if cfg.Client == nil || cfg.Node == "" || cfg.Tag == "" || cfg.LockKey == "" {
		return nil, errors.New("consul mirror: Client, Node, Tag and LockKey are required")
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Mirror{cfg: cfg, logger: cfg.Logger, kick: make(chan struct{}, 1), eligibility: make(chan struct{}, 1)}, nil
}

// Set replaces the desired set. It never blocks: the latest set wins.
func (m *Mirror) Set(services []CatalogService) {
	d := make(map[string]CatalogService, len(services))
	for _, s := range services {
		s.Tags = append(slices.Clone(s.Tags), m.cfg.Tag)
		slices.Sort(s.Tags)
		s.Tags = slices.Compact(s.Tags)
		d[s.ID] = s
	}
	m.mu.Lock()
	m.desired, m.haveDesired = d, true
	m.mu.Unlock()
	m.poke()
}

// SetEligible says whether this server may hold the leader lock. A server that cannot read its
// stacks (or whose read has stalled) is not: it gives the lock up at once, so that a server that
// can read its stacks leads instead of this one mirroring a stale set, and it does not campaign
// again until it is eligible. What it mirrored stays in the catalog.
func (m *Mirror) SetEligible(ok bool) {
	if m.ineligible.Swap(!ok) == !ok {
		return
	}
	select {
	case m.eligibility <- struct{}{}:
	default:
	}
}

// awaitEligible blocks while the mirror is ineligible; false when ctx ended.
func (m *Mirror) awaitEligible(ctx context.Context) bool {
	for m.ineligible.Load() {
		select {
		case <-ctx.Done():
			return false
		case <-m.eligibility:
		}
	}
	return true
}

// stepDownOn returns a channel closed when lost closes, when the mirror becomes ineligible, or
// when done closes; lead treats it as the loss of the lock.
func (m *Mirror) stepDownOn(lost, done <-chan struct{}) <-chan struct{} {
	out := make(chan struct{})
	go func() {
		defer close(out)
		for !m.ineligible.Load() {
			select {
			case <-lost:
				return
			case <-done:
				return
			case <-m.eligibility:
			}
		}
		m.logger.Warn("giving up the leader lock: this server cannot read its stacks", "key", m.cfg.LockKey)
	}()
	return out
}

// IsLeader reports whether this mirror holds the lock.
func (m *Mirror) IsLeader() bool { return m.leader.Load() }

func (m *Mirror) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run campaigns for the lock and, while holding it, keeps the catalog in line. It returns when
// ctx ends, after releasing the lock.
func (m *Mirror) Run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		if !m.awaitEligible(ctx) {
			return
		}
		lock, err := m.cfg.Client.LockOpts(&api.LockOptions{
			Key:            m.cfg.LockKey,
			SessionName:    "nullnet leader",
			SessionTTL:     m.cfg.LockTTL.String(),
			MonitorRetries: 5,
			LockWaitTime:   5 * time.Second,
		})
		if err != nil {
			m.logger.Error("cannot build the leader lock", "error", err)
			return
		}
		lost, err := lock.Lock(ctx.Done())
		if err != nil {
			failures++
			d := Backoff(failures, 10*time.Second)
			m.logger.Debug("cannot take the leader lock; retrying", "error", err, "retry_in", d)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		if lost == nil { // ctx ended while waiting
			return
		}
		failures = 0
		m.leader.Store(true)
		m.logger.Info("took the leader lock; mirroring stacks into the Consul catalog", "key", m.cfg.LockKey)
		if m.cfg.OnLeadership != nil {
			m.cfg.OnLeadership(true)
		}
		leadDone := make(chan struct{})
		m.lead(ctx, m.stepDownOn(lost, leadDone))
		close(leadDone)
		m.leader.Store(false)
		// Release with a fresh context: ctx may be over, and a clean release lets another
		// server take over at once instead of after the session TTL.
		if err := lock.Unlock(); err != nil && !errors.Is(err, api.ErrLockNotHeld) {
			m.logger.Debug("releasing the leader lock", "error", err)
		}
		if ctx.Err() == nil && !m.ineligible.Load() {
			m.logger.Warn("lost the leader lock; campaigning again", "key", m.cfg.LockKey)
		}
		if m.cfg.OnLeadership != nil {
			m.cfg.OnLeadership(false)
		}
	}
}

// lead reconciles until the lock is lost or ctx ends. Every goroutine it starts has ended when
// it returns.
func (m *Mirror) lead(ctx context.Context, lost <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait() // deferred first so that it runs after cancel
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// current is the node as last read. floor drops watch answers older than our last writes:
	// the watch may still deliver an intermediate state (some of our writes applied, not all),
	// which would make the next reconcile write the rest a second time.
	var curMu sync.Mutex
	var current *nodeState
	var floor uint64
	query := func(ctx context.Context, index uint64, wait time.Duration) (*nodeState, uint64, error) {
		st, idx, err := m.queryNode(ctx, index, wait)
		if err != nil {
			// Consul may come back without its data, its index below floor: accept what the
			// next answer says.
			curMu.Lock()
			floor = 0
			curMu.Unlock()
		}
		return st, idx, err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		Watch(ctx, WatchConfig{Name: "mirror node " + m.cfg.Node, Logger: m.logger},
			query, func(st *nodeState, idx uint64) {
				curMu.Lock()
				stale := idx < floor
				if !stale {
					current = st
				}
				curMu.Unlock()
				if !stale {
					m.poke()
				}
			})
	}()

	var retry <-chan time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-lost:
			return
		case <-m.kick:
		case <-retry:
		}
		retry = nil
		m.mu.Lock()
		desired, have := m.desired, m.haveDesired
		m.mu.Unlock()
		curMu.Lock()
		cur := current
		curMu.Unlock()
		if !have || cur == nil {
			continue // nothing to compare yet; the next kick brings it
		}
		writes, err := m.reconcile(ctx, desired, cur)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			d := Backoff(failures, 10*time.Second)
			m.logger.Warn("mirroring stacks into Consul failed; retrying", "error", err, "retry_in", d)
			if m.cfg.OnWriteError != nil && failures == 1 { // once per streak, not per retry
				m.cfg.OnWriteError(err)
			}
			retry = time.After(d)
			continue
		}
		failures = 0
		if writes > 0 {
			// Read the node back once, so that the next reconcile compares with a state that
			// includes every write, and older watch answers are dropped.
			fresh, idx, err := m.queryNode(ctx, 0, 0)
			curMu.Lock()
			if err == nil {
				current, floor = fresh, idx
			} else {
				current = applied(desired)
			}
			curMu.Unlock()
		}
		if m.cfg.OnSynced != nil {
			m.cfg.OnSynced(writes)
		}
	}
}

// nodeState is what the mirror reads back: its owned services and whether the node carries the
// node meta (a node created by someone else would lack it).
type nodeState struct {
	services map[string]*api.AgentService
	metaOK   bool
}

// queryNode is the blocking query on the mirror node's services (only those carrying Tag).
// A missing node is an empty, valid answer.
func (m *Mirror) queryNode(ctx context.Context, index uint64, wait time.Duration) (*nodeState, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	list, meta, err := m.cfg.Client.Catalog().NodeServiceList(m.cfg.Node, q)
	if err != nil {
		return nil, 0, fmt.Errorf("reading node %s: %w", m.cfg.Node, err)
	}
	// A missing node counts as metaOK: the first service registration creates it with its meta.
	st := &nodeState{services: map[string]*api.AgentService{}, metaOK: true}
	if list != nil && list.Node != nil {
		st.metaOK = true
		for k, v := range m.cfg.NodeMeta {
			if list.Node.Meta[k] != v {
				st.metaOK = false
			}
		}
		for _, s := range list.Services {
			if slices.Contains(s.Tags, m.cfg.Tag) {
				st.services[s.ID] = s
			}
		}
	}
	return st, meta.LastIndex, nil
}

// reconcile registers what is missing or different and deregisters owned services that are no
// longer desired. It returns the number of writes.
func (m *Mirror) reconcile(ctx context.Context, desired map[string]CatalogService, st *nodeState) (int, error) {
	writes := 0
	wopts := (&api.WriteOptions{}).WithContext(ctx)
	current := st.services
	if !st.metaOK && len(desired) > 0 {
		// The node was created by someone else: set its meta (external-node
		// keeps Consul's anti-entropy and the UI from treating it as a real agent).
		reg := &api.CatalogRegistration{Node: m.cfg.Node, Address: "127.0.0.1", NodeMeta: m.cfg.NodeMeta}
		if _, err := m.cfg.Client.Catalog().Register(reg, wopts); err != nil {
			return writes, fmt.Errorf("registering node %s: %w", m.cfg.Node, err)
		}
		writes++
	}
	for _, id := range slices.Sorted(maps.Keys(desired)) {
		want := desired[id]
		if have, ok := current[id]; ok && equalService(want, have) {
			continue
		}
		reg := &api.CatalogRegistration{
			Node:           m.cfg.Node,
			Address:        "127.0.0.1", // required by Consul; nothing connects to a virtual node
			NodeMeta:       m.cfg.NodeMeta,
			SkipNodeUpdate: true,
			Service:        &api.AgentService{ID: want.ID, Service: want.Name, Tags: want.Tags, Meta: want.Meta},
		}
		if _, err := m.cfg.Client.Catalog().Register(reg, wopts); err != nil {
			return writes, fmt.Errorf("registering %s: %w", id, err)
		}
		writes++
		metrics.IncrCounterWithLabels([]string{"nullnet", "server", "mirror", "writes"}, 1,
			[]metrics.Label{{Name: "op", Value: "register"}})
		m.logger.Info("registered definition", "service", want.Name, "id", id)
	}
	for _, id := range slices.Sorted(maps.Keys(current)) {
		if _, ok := desired[id]; ok {
			continue
		}
		dereg := &api.CatalogDeregistration{Node: m.cfg.Node, ServiceID: id}
		if _, err := m.cfg.Client.Catalog().Deregister(dereg, wopts); err != nil {
			return writes, fmt.Errorf("deregistering %s: %w", id, err)
		}
		writes++
		metrics.IncrCounterWithLabels([]string{"nullnet", "server", "mirror", "writes"}, 1,
			[]metrics.Label{{Name: "op", Value: "deregister"}})
		m.logger.Info("deregistered definition", "service", current[id].Service, "id", id)
	}
	return writes, nil
}

// equalService compares what the mirror controls. Consul returns nil and empty maps alike.
func equalService(want CatalogService, have *api.AgentService) bool {
	if want.Name != have.Service || have.Port != 0 || have.Address != "" {
		return false
	}
	tags := slices.Clone(have.Tags)
	slices.Sort(tags)
	if !slices.Equal(want.Tags, tags) {
		return false
	}
	return len(want.Meta) == len(have.Meta) && maps.Equal(want.Meta, have.Meta)
}

// applied is current after a successful reconcile toward desired.
func applied(desired map[string]CatalogService) *nodeState {
	out := &nodeState{services: make(map[string]*api.AgentService, len(desired)), metaOK: true}
	for id, s := range desired {
		out.services[id] = &api.AgentService{ID: id, Service: s.Name, Tags: s.Tags, Meta: s.Meta}
	}
	return out
}
