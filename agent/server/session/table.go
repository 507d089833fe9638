package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"

	"github.com/nullnet/nullnet/lib/retry"
)

// Hooks are told about lifecycle changes (events, logs). They run without the table's lock
// held and must not block for long.
type Hooks struct {
	Created         func(s Session)
	SetupFailed     func(s Session, err error)
	TornDown        func(s Session, reason string)
	TeardownFailed  func(s Session, reason string, err error)
	PoolExhausted   func(key Key, err error)
	ReplicaSelected func(s Session) // optional, for logs
	// Adopted: a session was created by Adopt (no setup ran).
	Adopted func(s Session)
}

// Config for New.
type Config struct {
	Commander Commander
	// NetIDs enables the net id pool (network "vxlan"). Without it sessions carry net id 0.
	NetIDs          bool
	MinNetID        uint32
	MaxNetID        uint32
	Hooks           Hooks
	Logger          hclog.Logger
	RetryMin        time.Duration // first teardown retry delay (default 500 ms)
	RetryMax        time.Duration // cap of the teardown retry delay (default 15 s)
	MetricsDisabled bool
}

// Table is the session table. Safe for concurrent use. Close stops its goroutines.
type Table struct {
	cfg    Config
	logger hclog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	byKey  map[Key]*entry    // sessions being created or active
	byID   map[string]*entry // every session, tearing-down ones included
	leases map[string]*lease
	load   map[string]int // replica id -> sessions (creating + active)
	pool   *pool
}

type entry struct {
	s      Session
	ready  chan struct{} // closed when setup ended (either way)
	err    error         // setup error, set before ready closes
	doomed string        // a teardown was asked for during setup
	leases map[string]bool
	timer  *time.Timer
	gen    uint64 // bumped whenever the idle timer is (re)armed or cancelled
}

type lease struct {
	id        string
	e         *entry
	proxyNode string
	taken     time.Time
}

// New returns a table. Its teardown goroutines live until Close.
func New(cfg Config) *Table {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 15 * time.Second
	}
	if cfg.MinNetID == 0 || cfg.MaxNetID < cfg.MinNetID {
		cfg.MinNetID, cfg.MaxNetID = 101, 2097151
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Table{cfg: cfg, logger: cfg.Logger, ctx: ctx, cancel: cancel, byKey: map[Key]*entry{},
		byID: map[string]*entry{}, leases: map[string]*lease{}, load: map[string]int{},
		pool: newPool(cfg.MinNetID, cfg.MaxNetID)}
}

// Close stops idle timers and teardown retries and waits for in-flight commands to return.
// Sessions are left as they are (see ReasonShutdown).
func (t *Table) Close() {
	t.mu.Lock()
	t.closed = true
	for _, e := range t.byID {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// Acquire returns the session for req.Key with one new lease, building it when it does not
// exist. Concurrent calls for one key share one setup and its result. The setup itself runs
// on the table's context, not ctx: one impatient caller must not fail the others waiting for
// the same tunnel; a caller that gave up gets no lease, so it cannot keep the session alive.
func (t *Table) Acquire(ctx context.Context, req Request) (Result, error) {
	t.mu.Lock()
	for {
		if t.closed {
			t.mu.Unlock()
			return Result{}, ErrClosed
		}
		e := t.byKey[req.Key]
		if e == nil {
			break
		}
		if e.s.State == StateActive {
			id := t.addLeaseLocked(e)
			snap := e.snapshot()
			t.mu.Unlock()
			return Result{Session: snap, LeaseID: id, Reused: true}, nil
		}
		// Creating: wait for the setup in flight and share its result.
		ready := e.ready
		t.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
		if e.err != nil {
			return Result{}, e.err
		}
		t.mu.Lock()
		// Active now (loop re-checks: it may already have been torn down again).
	}
	if len(req.Candidates) == 0 {
		t.mu.Unlock()
		return Result{}, ErrNoReplica
	}
	rep := t.pickLocked(req.Candidates)
	var netID uint32
	if t.cfg.NetIDs {
		id, err := t.pool.alloc()
		if err != nil {
			t.mu.Unlock()
			if t.cfg.Hooks.PoolExhausted != nil {
				t.cfg.Hooks.PoolExhausted(req.Key, err)
			}
			return Result{}, err
		}
		netID = id
	}
	e := &entry{ready: make(chan struct{}), leases: map[string]bool{}}
	e.s = Session{ID: newID(), Key: req.Key, NetID: netID, Replica: rep, State: StateCreating,
		Created: time.Now(), Timeout: req.Timeout}
	t.byKey[req.Key] = e
	t.byID[e.s.ID] = e
	t.load[rep.ID]++
	t.gaugesLocked()
	snap := e.snapshot()
	t.mu.Unlock()

	if t.cfg.Hooks.ReplicaSelected != nil {
		t.cfg.Hooks.ReplicaSelected(snap)
	}
	up, err := t.cfg.Commander.Setup(t.ctx, snap)
	latency := time.Since(snap.Created)

	t.mu.Lock()
	e.s.SetupLatency = latency
	if err == nil && e.doomed != "" {
		err = fmt.Errorf("%w (%s)", ErrTornDownInSetup, e.doomed)
	}
	if err != nil {
		e.err = err
		reason := ReasonSetupFailed
		if e.doomed != "" {
			reason = e.doomed
		}
		t.beginTeardownLocked(e, reason)
		failed := e.snapshot()
		close(e.ready)
		t.mu.Unlock()
		if !t.cfg.MetricsDisabled {
			metrics.IncrCounterWithLabels([]string{"nullnet", "session", "setups"}, 1,
				[]metrics.Label{{Name: "result", Value: "failure"}})
		}
		if t.cfg.Hooks.SetupFailed != nil {
			t.cfg.Hooks.SetupFailed(failed, err)
		}
		return Result{}, err
	}
	e.s.State = StateActive
	e.s.UpstreamIP, e.s.UpstreamPort = up.IP, up.Port
	var leaseID string
	if ctx.Err() == nil {
		leaseID = t.addLeaseLocked(e)
	} else {
		t.idleLocked(e) // nobody holds it: the idle timeout applies at once
	}
	close(e.ready)
	created := e.snapshot()
	t.mu.Unlock()
	if !t.cfg.MetricsDisabled {
		metrics.IncrCounterWithLabels([]string{"nullnet", "session", "setups"}, 1,
			[]metrics.Label{{Name: "result", Value: "success"}})
		metrics.MeasureSinceWithLabels([]string{"nullnet", "session", "setup_latency"}, snap.Created, nil)
	}
	if t.cfg.Hooks.Created != nil {
		t.cfg.Hooks.Created(created)
	}
	if leaseID == "" {
		return Result{}, ctx.Err()
	}
	return Result{Session: created, LeaseID: leaseID}, nil
}

// pickLocked returns the candidate with the fewest sessions (ties: lowest id, so the choice is
// deterministic).
func (t *Table) pickLocked(c []Replica) Replica {
	best := c[0]
	for _, r := range c[1:] {
		lb, lr := t.load[best.ID], t.load[r.ID]
		if lr < lb || (lr == lb && r.ID < best.ID) {
			best = r
		}
	}
	return best
}

func (t *Table) addLeaseLocked(e *entry) string {
	id := newID()
	t.leases[id] = &lease{id: id, e: e, proxyNode: e.s.ProxyNode, taken: time.Now()}
	e.leases[id] = true
	e.s.Uses++
	e.s.IdleSince = nil
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	return id
}

// idleLocked starts the idle timer of a session that has no use left.
func (t *Table) idleLocked(e *entry) {
	now := time.Now()
	e.s.IdleSince = &now
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if e.s.Timeout <= 0 || t.closed {
		return // timeout 0 never expires
	}
	gen := e.gen
	e.timer = time.AfterFunc(e.s.Timeout, func() { t.expire(e, gen) })
}

func (t *Table) expire(e *entry, gen uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || e.gen != gen || e.s.State != StateActive || e.s.Uses > 0 {
		return
	}
	t.beginTeardownLocked(e, ReasonIdleTimeout)
}

// Release ends one use. When the session has no use left its idle timer starts.
func (t *Table) Release(leaseID, proxyNode string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.leases[leaseID]
	if l == nil || (proxyNode != "" && l.proxyNode != proxyNode) {
		return fmt.Errorf("%w %q", ErrUnknownLease, leaseID)
	}
	t.releaseLocked(l)
	return nil
}

func (t *Table) releaseLocked(l *lease) {
	delete(t.leases, l.id)
	e := l.e
	delete(e.leases, l.id)
	e.s.Uses--
	if e.s.Uses == 0 && e.s.State == StateActive {
		t.idleLocked(e)
	}
}

// ReleaseNode ends every use held by a proxy node (its connection to the server is gone) and
// returns how many there were.
func (t *Table) ReleaseNode(proxyNode string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range t.leases {
		if l.proxyNode == proxyNode {
			t.releaseLocked(l)
			n++
		}
	}
	return n
}

// ReleaseNodeBefore ends the uses a proxy node took before t (its agent restarted: the old
// process's connections are gone, a new process's uses stay) and returns how many there were.
func (t *Table) ReleaseNodeBefore(proxyNode string, before time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range t.leases {
		if l.proxyNode == proxyNode && l.taken.Before(before) {
			t.releaseLocked(l)
			n++
		}
	}
	return n
}

// TearDown forces the teardown of one session.
func (t *Table) TearDown(id, reason string) (Session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil || e.s.State == StateTearingDown {
		return Session{}, fmt.Errorf("%w %q", ErrUnknownSession, id)
	}
	if e.s.State == StateCreating {
		e.doomed = reason
		return e.snapshot(), nil
	}
	t.beginTeardownLocked(e, reason)
	return e.snapshot(), nil
}

// TearDownWhere tears down every session for which match is true (sessions still being set up
// are torn down as soon as their setup ends) and returns how many matched.
func (t *Table) TearDownWhere(match func(Session) bool, reason string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, e := range t.byKey {
		if !match(e.s) {
			continue
		}
		n++
		if e.s.State == StateCreating {
			if e.doomed == "" {
				e.doomed = reason
			}
			continue
		}
		t.beginTeardownLocked(e, reason)
	}
	return n
}

// beginTeardownLocked takes a session out of service (a new request for its key builds a new
// one) and starts its acked teardown; the net id returns to the pool only when that succeeded.
func (t *Table) beginTeardownLocked(e *entry, reason string) {
	if e.s.State == StateTearingDown {
		return
	}
	wasActive := e.s.State == StateActive
	e.s.State = StateTearingDown
	e.s.Reason = reason
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if t.byKey[e.s.Key] == e {
		delete(t.byKey, e.s.Key)
	}
	for id := range e.leases {
		delete(t.leases, id)
	}
	e.leases = map[string]bool{}
	e.s.Uses = 0
	if t.load[e.s.Replica.ID]--; t.load[e.s.Replica.ID] <= 0 {
		delete(t.load, e.s.Replica.ID)
	}
	t.gaugesLocked()
	snap := e.snapshot()
	t.wg.Add(1)
	go t.teardown(e, snap, reason, wasActive)
}

func (t *Table) teardown(e *entry, snap Session, reason string, announce bool) {
	defer t.wg.Done()
	delay := t.cfg.RetryMin
	for {
		err := t.cfg.Commander.Teardown(t.ctx, snap, reason)
		if err == nil {
			break
		}
		if t.ctx.Err() != nil {
			return // closing: the id stays taken, which is moot now
		}
		if t.cfg.Hooks.TeardownFailed != nil {
			t.cfg.Hooks.TeardownFailed(snap, reason, err)
		}
		t.logger.Warn("teardown not confirmed; retrying", "session", snap.ID, "net_id", snap.NetID,
			"reason", reason, "error", err, "retry_in", delay)
		if !retry.Sleep(t.ctx, delay) {
			return
		}
		delay = min(delay*2, t.cfg.RetryMax)
	}
	t.mu.Lock()
	delete(t.byID, snap.ID)
	if t.cfg.NetIDs {
		t.pool.free(snap.NetID)
	}
	t.gaugesLocked()
	t.mu.Unlock()
	if !t.cfg.MetricsDisabled {
		metrics.IncrCounterWithLabels([]string{"nullnet", "session", "teardowns"}, 1,
			[]metrics.Label{{Name: "reason", Value: reason}})
	}
	if announce && t.cfg.Hooks.TornDown != nil {
		t.cfg.Hooks.TornDown(snap, reason)
	}
}

func (t *Table) gaugesLocked() {
	if t.cfg.MetricsDisabled {
		return
	}
	open := 0
	for _, e := range t.byKey {
		if e.s.State == StateActive {
			open++
		}
	}
	metrics.SetGauge([]string{"nullnet", "sessions", "open"}, float32(open))
	if t.cfg.NetIDs {
		metrics.SetGauge([]string{"nullnet", "netid", "pool_in_use"}, float32(t.pool.used()))
	}
}

// ReserveNetID takes id out of the pool while something outside a session (a stale end a node
// reported) still uses it; it reports false when the id is held already. ReleaseNetID gives it
// back.
func (t *Table) ReserveNetID(id uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cfg.NetIDs && t.pool.reserve(id)
}

// ReleaseNetID returns an id taken with ReserveNetID.
func (t *Table) ReleaseNetID(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pool.free(id)
	t.gaugesLocked()
}

// List returns every session (tearing-down ones included) oldest first.
func (t *Table) List() []Session {
	t.mu.Lock()
	out := make([]Session, 0, len(t.byID))
	for _, e := range t.byID {
		out = append(out, e.snapshot())
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Get returns one session.
func (t *Table) Get(id string) (Session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil {
		return Session{}, false
	}
	return e.snapshot(), true
}

// Stats are counts for metrics and status pages.
type Stats struct {
	Open        int `json:"open"`
	Creating    int `json:"creating"`
	TearingDown int `json:"tearing_down"`
	Leases      int `json:"leases"`
	NetIDsInUse int `json:"net_ids_in_use"`
}

// Stats counts sessions by state.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var s Stats
	for _, e := range t.byID {
		switch e.s.State {
		case StateActive:
			s.Open++
		case StateCreating:
			s.Creating++
		case StateTearingDown:
			s.TearingDown++
		}
	}
	s.Leases = len(t.leases)
	s.NetIDsInUse = t.pool.used()
	return s
}

func (e *entry) snapshot() Session {
	s := e.s
	if s.IdleSince != nil {
		v := *s.IdleSince
		s.IdleSince = &v
	}
	return s
}

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.New("session: crypto/rand failed: " + err.Error()))
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
