package consul

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"

	"github.com/nullnet/nullnet/lib/retry"
)

// CatalogService is one service instance the mirror keeps registered on its node. The caller
// (the server) turns its own definitions into these, so this package knows nothing of stacks.
type CatalogService struct {
	ID   string
	Name string
	Tags []string
	Meta map[string]string
	// KV, when set, is a Consul KV entry under MirrorConfig.KVPrefix that belongs to this
	// service: it is written in the same transaction as the service's registration, so that a
	// reader never sees the service's new meta in one state of Consul and its document in
	// another. The service's meta should name a digest of the value, so that readers, whose
	// catalog and KV queries answer separately, can tell whether the two they hold match.
	KV *KVEntry
}

// KVEntry is one key and its value.
type KVEntry struct {
	Key   string
	Value []byte
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
	// with the number of service writes it took (optional; used by tests and metrics).
	OnSynced func(writes int)
	// ExternalWatch: the caller already watches Node (with ReadNode) and hands every answer
	// to Observe, so the mirror holds no blocking query of its own: one connection to Consul
	// fewer, and readers and writer see the same answers.
	ExternalWatch bool
	// KVPrefix, when set, is a KV prefix the mirror owns: the desired services' KV entries
	// are written under it, and every other key under it is deleted. The prefix is read at
	// every reconcile (a plain read); a caller that watches it hands changes to KVChanged, so
	// that a hand edit is repaired.
	KVPrefix string
}

// Mirror makes the services carrying Tag on Node match a desired set, but only while it holds
// the leader lock, so that two servers with different stack files never fight. It watches the
// node with a blocking query, so drift (someone deleting a definition by hand, a Consul that
// lost its state) is repaired, and it writes nothing when the catalog already matches: a
// restart with unchanged stacks changes nothing in Consul.
//
// Writes go in Consul transactions of at most MaxTxnOps operations, not one HTTP request per
// service: 10,000 definitions take 79 transactions on one connection instead of 10,000
// requests. The first transaction of a change also sets the node meta MetaDigest/MetaCount to
// the set being written, so a reader can tell (NodeState.Complete) whether the services it sees
// are the whole announced set or an intermediate state between two transactions.
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

	// current is the node as last read. floor drops watch answers older than our last writes:
	// the watch may still deliver an intermediate state (some of our writes applied, not all),
	// which would make the next reconcile write the rest a second time.
	curMu   sync.Mutex
	current *NodeState
	floor   uint64
}

// NewMirror builds a mirror; call Set with the desired services and Run to start it.
func NewMirror(cfg MirrorConfig) (*Mirror, error) {
	if cfg.Client == nil || cfg.Node == "" || cfg.Tag == "" || cfg.LockKey == "" {
		return nil, errors.New("consul mirror: Client, Node, Tag and LockKey are required")
	}
	if cfg.KVPrefix != "" && strings.HasPrefix(cfg.LockKey, cfg.KVPrefix) {
		// Every key under the prefix that no service claims is deleted: the lock among them.
		return nil, fmt.Errorf("consul mirror: LockKey %q lies under KVPrefix %q", cfg.LockKey, cfg.KVPrefix)
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

// KVChanged tells the mirror that something under KVPrefix changed (a reconcile follows).
func (m *Mirror) KVChanged() { m.poke() }

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
			d := retry.Backoff(100*time.Millisecond, 10*time.Second, failures)
			m.logger.Debug("cannot take the leader lock; retrying", "error", err, "retry_in", d)
			if !retry.Sleep(ctx, d) {
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

// MaxTxnOps is the most operations Consul accepts in one transaction (maxTxnOps in Consul
// 1.16's txn endpoint; older releases allowed 64, newer ones keep 128).
const MaxTxnOps = 128

// Observe hands the mirror one answer of the caller's watch of Node (ExternalWatch). A nil
// state reports a failed query: the next answer is then taken whatever its index, as Consul
// may have come back without its data.
func (m *Mirror) Observe(st *NodeState) {
	m.curMu.Lock()
	if st == nil {
		m.floor = 0
		m.curMu.Unlock()
		return
	}
	stale := st.Index < m.floor
	if !stale {
		m.current = st
	}
	m.curMu.Unlock()
	if !stale {
		m.poke()
	}
}

// lead reconciles until the lock is lost or ctx ends. Every goroutine it starts has ended when
// it returns.
func (m *Mirror) lead(ctx context.Context, lost <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait() // deferred first so that it runs after cancel
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if !m.cfg.ExternalWatch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			Watch(ctx, WatchConfig{Name: "mirror node " + m.cfg.Node, Logger: m.logger},
				func(ctx context.Context, index uint64, wait time.Duration) (*NodeState, uint64, error) {
					st, idx, err := ReadNode(ctx, m.cfg.Client, m.cfg.Node, m.cfg.Tag, index, wait)
					if err != nil {
						m.Observe(nil)
					}
					return st, idx, err
				},
				func(st *NodeState, _ uint64) { m.Observe(st) })
		}()
	}

	var retryC <-chan time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-lost:
			return
		case <-m.kick:
		case <-retryC:
		}
		retryC = nil
		m.mu.Lock()
		desired, have := m.desired, m.haveDesired
		m.mu.Unlock()
		m.curMu.Lock()
		cur := m.current
		m.curMu.Unlock()
		if !have || cur == nil {
			continue // nothing to compare yet; the next kick brings it
		}
		writes, err := m.reconcile(ctx, desired, cur)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			d := retry.Backoff(100*time.Millisecond, 10*time.Second, failures)
			m.logger.Warn("mirroring stacks into Consul failed; retrying", "error", err, "retry_in", d)
			if m.cfg.OnWriteError != nil && failures == 1 { // once per streak, not per retry
				m.cfg.OnWriteError(err)
			}
			retryC = time.After(d)
			continue
		}
		failures = 0
		if writes >= 0 {
			// Read the node back once, so that the next reconcile compares with a state that
			// includes every write, and older watch answers are dropped.
			fresh, idx, err := ReadNode(ctx, m.cfg.Client, m.cfg.Node, m.cfg.Tag, 0, 0)
			m.curMu.Lock()
			if err == nil {
				m.current, m.floor = fresh, idx
			} else {
				m.current = m.applied(desired)
			}
			m.curMu.Unlock()
		}
		if m.cfg.OnSynced != nil {
			m.cfg.OnSynced(max(writes, 0))
		}
	}
}

// wantMeta is the node meta for a desired set: the configured meta plus the announcement.
func (m *Mirror) wantMeta(desired map[string]CatalogService) map[string]string {
	meta := maps.Clone(m.cfg.NodeMeta)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[MetaDigest] = Digest(slices.Collect(maps.Values(desired)))
	meta[MetaCount] = strconv.Itoa(len(desired))
	return meta
}

// reconcile registers what is missing or different and deregisters owned services that are no
// longer desired, in transactions of at most MaxTxnOps operations; a service's KV entry goes in
// the same transaction as its registration, and KV keys under KVPrefix that no desired service
// claims are deleted after the services. It returns the number of writes, or -1 when nothing at
// all was written (not even the node).
func (m *Mirror) reconcile(ctx context.Context, desired map[string]CatalogService, st *NodeState) (int, error) {
	current := st.Services
	kv, err := m.readKV(ctx)
	if err != nil {
		return 0, err
	}
	// groups: the operations that must share a transaction (a service and its KV entry).
	var groups []api.TxnOps
	var registered, deregistered []string
	kvWrites := 0
	claimed := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(desired)) {
		want := desired[id]
		var g api.TxnOps
		if have, ok := current[id]; !ok || !equalService(want, have) {
			g = append(g, &api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: m.cfg.Node,
				Service: api.AgentService{ID: want.ID, Service: want.Name, Tags: want.Tags, Meta: want.Meta}}})
			registered = append(registered, id)
		}
		if e := want.KV; e != nil && m.cfg.KVPrefix != "" && strings.HasPrefix(e.Key, m.cfg.KVPrefix) {
			claimed[e.Key] = true
			if have, ok := kv[e.Key]; !ok || !bytes.Equal(have, e.Value) {
				g = append(g, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: e.Key, Value: e.Value}})
				kvWrites++
			}
		}
		if len(g) > 0 {
			groups = append(groups, g)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(current)) {
		if _, ok := desired[id]; ok {
			continue
		}
		groups = append(groups, api.TxnOps{&api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceDelete, Node: m.cfg.Node,
			Service: api.AgentService{ID: id, Service: current[id].Service}}}})
		deregistered = append(deregistered, id)
	}
	// Stale keys last: a reader that sees a service whose meta still names a document finds it
	// until the service itself has changed.
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		if !claimed[k] {
			groups = append(groups, api.TxnOps{&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: k}}})
			kvWrites++
		}
	}
	meta := m.wantMeta(desired)
	nodeOK := st.Exists && metaCovers(st.Meta, meta)
	// Nothing owned, nothing wanted: the node is not created (stale keys are still deleted).
	needNode := !nodeOK && (st.Exists || len(desired) > 0)
	if len(groups) == 0 && !needNode {
		return -1, nil
	}
	if needNode {
		// First, so the node exists before its services and the announcement precedes them:
		// a reader sees the new digest with an incomplete set, never a partial set it could
		// take for complete. external-node keeps Consul's anti-entropy and the UI from treating
		// the node as a real agent; the address is required but nothing connects to it.
		node := &api.TxnOp{Node: &api.NodeTxnOp{Verb: api.NodeSet,
			Node: api.Node{Node: m.cfg.Node, Address: "127.0.0.1", Meta: meta}}}
		groups = append([]api.TxnOps{{node}}, groups...)
	}
	started := time.Now()
	txns := 0
	for _, chunk := range packGroups(groups, MaxTxnOps) {
		q := (&api.QueryOptions{}).WithContext(ctx)
		ok, resp, _, err := m.cfg.Client.Txn().Txn(chunk, q)
		if err != nil {
			return 0, QueryError(fmt.Sprintf("writing %d catalog operation(s) on node %s", len(chunk), m.cfg.Node),
				m.writeACL(), err)
		}
		if !ok {
			var errs []string
			if resp != nil {
				for _, e := range resp.Errors {
					errs = append(errs, fmt.Sprintf("op %d: %s", e.OpIndex, e.What))
				}
			}
			return 0, fmt.Errorf("catalog transaction on node %s rolled back: %v", m.cfg.Node, errs)
		}
		txns++
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "mirror", "writes"}, float32(len(registered)),
		[]metrics.Label{{Name: "op", Value: "register"}})
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "mirror", "writes"}, float32(len(deregistered)),
		[]metrics.Label{{Name: "op", Value: "deregister"}})
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "mirror", "writes"}, float32(kvWrites),
		[]metrics.Label{{Name: "op", Value: "kv"}})
	// One line per change, not per definition: a stack of thousands must not flood the log.
	m.logger.Info("mirrored definitions into the catalog", "registered", len(registered),
		"deregistered", len(deregistered), "kv_writes", kvWrites, "total", len(desired), "transactions", txns,
		"took", time.Since(started).Round(time.Millisecond),
		"sample", sample(registered, deregistered))
	for _, id := range registered {
		m.logger.Debug("registered definition", "id", id)
	}
	for _, id := range deregistered {
		m.logger.Debug("deregistered definition", "id", id)
	}
	return len(registered) + len(deregistered) + kvWrites, nil
}

// sample names a few of the changed ids for the log line.
func sample(registered, deregistered []string) string {
	var parts []string
	for _, id := range registered {
		if len(parts) == 5 {
			break
		}
		parts = append(parts, "+"+id)
	}
	for _, id := range deregistered {
		if len(parts) == 10 {
			break
		}
		parts = append(parts, "-"+id)
	}
	if n := len(registered) + len(deregistered); n > len(parts) {
		parts = append(parts, fmt.Sprintf("(+%d more)", n-len(parts)))
	}
	return strings.Join(parts, " ")
}

// metaCovers reports whether have carries every key of want with the same value.
func metaCovers(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
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

// applied is the node after a successful reconcile toward desired.
func (m *Mirror) applied(desired map[string]CatalogService) *NodeState {
	out := &NodeState{Exists: true, Meta: m.wantMeta(desired), Services: make(map[string]*api.AgentService, len(desired))}
	for id, s := range desired {
		out.Services[id] = &api.AgentService{ID: id, Service: s.Name, Tags: s.Tags, Meta: s.Meta}
	}
	return out
}
