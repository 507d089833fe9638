// Package leader is the servers' leadership lifecycle, after Consul's leader.go and Nomad's
// monitorLeadership: one Consul lock, a Run loop that campaigns for it, calls Establish when it
// wins and Revoke when it loses, and never keeps half a leader (an Establish that fails is
// revoked at once, the lock is given up, and the server campaigns again after a backoff).
//
// Foundation for issue 19; not yet wired into the server (the stacks mirror still holds its own
// lock on the same key, see agent/consul/mirror.go). See website/docs/ha.md.
//
// Timings. Consul's defaults (session TTL 15 s, lock-delay 15 s) make a takeover after a crash
// take 30 to 45 s: Consul waits up to twice the TTL before it invalidates a session, and
// refuses the lock for lock-delay after that. nullnet's defaults are a 10 s session TTL (the
// least Consul accepts) as a backstop, a 1 s lock-delay (long enough for a deposed leader's
// in-flight writes to land or fail, short enough not to matter to a client) and, above all, a
// 2 s TTL health check on the server's Consul node that the session is tied to: a server that
// stops heartbeating loses its session within CheckTTL, not within 2×SessionTTL.
package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/lib/retry"
)

// Defaults (see the package comment for why they are not Consul's).
const (
	DefaultKey        = "nullnet/leader"
	DefaultSessionTTL = 10 * time.Second
	DefaultLockDelay  = 1 * time.Second
	DefaultCheckTTL   = 2 * time.Second
	DefaultRetryMax   = 10 * time.Second
)

// Reasons of leadership_lost.
const (
	ReasonSessionInvalidated = "session_invalidated" // the lock session is gone (check failed, TTL, destroyed)
	ReasonLockLost           = "lock_lost"           // the key was released, deleted or taken
	ReasonShutdown           = "shutdown"            // Run's context ended
	ReasonEstablishFailed    = "establish_failed"    // Establish returned an error
)

// Config configures a Leadership.
type Config struct {
	Client *api.Client
	Logger hclog.Logger
	Events events.Emitter // optional
	// Key is the lock's KV key (default DefaultKey). The lock uses api.Lock's flag value, so it
	// is mutually exclusive with an api.Lock on the same key (today's mirror).
	Key string
	// Name and Address identify this server; they are the lock's value, so Leader can say who
	// leads.
	Name    string
	Address string
	// SessionTTL (default 10 s, Consul's minimum) and LockDelay (default 1 s) of the lock session.
	SessionTTL time.Duration
	LockDelay  time.Duration
	// CheckTTL is the TTL of the agent check the session is tied to (default 2 s; negative: no
	// check, the session dies only by its TTL). It is what makes a crashed leader's lock free
	// within seconds.
	CheckTTL time.Duration
	// RetryMax caps the backoff between campaigns after failures (default 10 s).
	RetryMax time.Duration
	// Establish starts every leader-only task; it runs with a context that ends on revoke. An
	// error revokes at once.
	Establish func(ctx context.Context) error
	// Revoke stops what Establish started. It is called exactly once after every Establish
	// (also a failed one) and before the lock is released, so two servers never act at once.
	Revoke func()
}

// Info names a leader: the lock's value.
type Info struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	// Session is the lock session's id, and ConsulNode the Consul node it belongs to when the
	// lock carries no value (a plain api.Lock, today's mirror); neither is part of the value.
	Session    string `json:"-"`
	ConsulNode string `json:"-"`
}

// Leadership campaigns for the lock. Build with New, then Run.
type Leadership struct {
	cfg     Config
	logger  hclog.Logger
	checkID string

	mu      sync.Mutex
	leader  bool
	session string // the lock session while the lock is held
}

// New checks the config and fills defaults.
func New(cfg Config) (*Leadership, error) {
	if cfg.Client == nil || cfg.Name == "" {
		return nil, errors.New("leader: Client and Name are required")
	}
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.SessionTTL < 10*time.Second {
		return nil, fmt.Errorf("leader: SessionTTL %s is below Consul's minimum of 10s", cfg.SessionTTL)
	}
	if cfg.LockDelay == 0 {
		cfg.LockDelay = DefaultLockDelay
	}
	if cfg.CheckTTL == 0 {
		cfg.CheckTTL = DefaultCheckTTL
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Establish == nil {
		cfg.Establish = func(context.Context) error { return nil }
	}
	if cfg.Revoke == nil {
		cfg.Revoke = func() {}
	}
	l := &Leadership{cfg: cfg, logger: cfg.Logger}
	if cfg.CheckTTL > 0 {
		l.checkID = "nullnet-leader-" + cfg.Name
	}
	return l, nil
}

// IsLeader reports whether this server leads (Establish succeeded and no revoke since).
func (l *Leadership) IsLeader() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leader
}

func (l *Leadership) setLeader(v bool) {
	l.mu.Lock()
	l.leader = v
	l.mu.Unlock()
}

// Fence returns the lock key and the session that holds it while this server holds the lock
// (empty otherwise). A write that carries a check-session on it (sessionstore.Config.Fence)
// fails once this server has lost the lock, even before Revoke has run.
func (l *Leadership) Fence() (key, session string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg.Key, l.session
}

func (l *Leadership) setSession(id string) {
	l.mu.Lock()
	l.session = id
	l.mu.Unlock()
}

// Leader returns the current leader as read from Consul; ok is false when nobody holds the lock.
func (l *Leadership) Leader(ctx context.Context) (Info, bool, error) {
	return Current(ctx, l.cfg.Client, l.cfg.Key)
}

// Current reads who holds the lock at key: the value this package writes, or, for a lock taken
// by plain api.Lock (no value), the session's name and node.
func Current(ctx context.Context, c *api.Client, key string) (Info, bool, error) {
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	pair, _, err := c.KV().Get(key, q)
	if err != nil {
		return Info{}, false, fmt.Errorf("reading leader key %s: %w", key, err)
	}
	if pair == nil || pair.Session == "" {
		return Info{}, false, nil
	}
	var in Info
	if len(pair.Value) > 0 && json.Unmarshal(pair.Value, &in) == nil && in.Name != "" {
		in.Session = pair.Session
		return in, true, nil
	}
	se, _, err := c.Session().Info(pair.Session, q)
	if err != nil {
		return Info{}, false, fmt.Errorf("reading leader session %s: %w", pair.Session, err)
	}
	if se == nil {
		return Info{}, false, nil
	}
	return Info{Name: se.Name, ConsulNode: se.Node, Session: se.ID}, true, nil
}

// Run campaigns until ctx ends. When it returns, Revoke has run for every Establish and the lock
// and the session are released.
func (l *Leadership) Run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		err := l.term(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			continue
		}
		failures++
		d := retry.Backoff(100*time.Millisecond, l.cfg.RetryMax, failures)
		l.logger.Warn("leadership campaign failed; retrying", "error", err, "retry_in", d)
		if !retry.Sleep(ctx, d) {
			return
		}
	}
}

// term is one session's life: create it, campaign, lead until lost, release. A nil error means
// the session ended normally (lost leadership), so the caller campaigns again at once.
func (l *Leadership) term(ctx context.Context) error {
	if err := l.startCheck(ctx); err != nil {
		return err
	}
	// The heartbeat deregisters the check when it stops; wait for that, so that it never
	// races the next term's registration.
	checkCtx, stopCheck := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); l.heartbeat(checkCtx) }()
	defer func() { stopCheck(); <-hbDone }()

	se := &api.SessionEntry{
		Name: "nullnet leader " + l.cfg.Name, TTL: l.cfg.SessionTTL.String(),
		LockDelay: l.cfg.LockDelay, Behavior: api.SessionBehaviorRelease,
	}
	if l.checkID != "" {
		se.NodeChecks = []string{"serfHealth", l.checkID}
	}
	wo := (&api.WriteOptions{}).WithContext(ctx)
	id, _, err := l.cfg.Client.Session().Create(se, wo)
	if err != nil {
		return fmt.Errorf("creating the lock session: %w", err)
	}
	// The session lives as long as renewals succeed; renewDone closes when they stop.
	renewStop := make(chan struct{})
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		_ = l.cfg.Client.Session().RenewPeriodic(se.TTL, id, nil, renewStop)
	}()
	defer func() {
		close(renewStop) // RenewPeriodic destroys the session, which releases the key
		<-renewDone
	}()

	held, err := l.acquire(ctx, id, renewDone)
	if err != nil || !held {
		return err
	}
	// Release the key before the session goes: destroying a session that holds the lock
	// starts lock-delay, a release does not, so a clean stop hands over at once.
	l.setSession(id)
	defer func() {
		l.setSession("")
		_, _, err := l.cfg.Client.KV().Release(&api.KVPair{Key: l.cfg.Key, Session: id, Flags: api.LockFlagValue}, nil)
		if err != nil {
			l.logger.Debug("releasing the leader lock", "key", l.cfg.Key, "error", err)
		}
	}()
	return l.lead(ctx, id, renewDone)
}

// acquire tries for the lock until it is held, the session dies or ctx ends.
func (l *Leadership) acquire(ctx context.Context, session string, renewDone <-chan struct{}) (bool, error) {
	value, _ := json.Marshal(Info{Name: l.cfg.Name, Address: l.cfg.Address})
	kv := l.cfg.Client.KV()
	var index uint64
	freeRefused := false
	for {
		select {
		case <-renewDone:
			return false, errors.New("lock session expired while campaigning")
		default:
		}
		ok, _, err := kv.Acquire(&api.KVPair{Key: l.cfg.Key, Value: value, Session: session, Flags: api.LockFlagValue},
			(&api.WriteOptions{}).WithContext(ctx))
		if ctx.Err() != nil {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("acquiring %s: %w", l.cfg.Key, err)
		}
		if ok {
			return true, nil
		}
		// Held by someone: block until the key changes (bounded wait, so that a dead session of
		// ours is noticed). Free: it was just released (try again at once) or lock-delay is
		// running (a second refusal: retry soon; api.Lock waits a fixed 5 s here, which alone
		// would break the failover target).
		pair, meta, err := kv.Get(l.cfg.Key, (&api.QueryOptions{WaitIndex: index, WaitTime: l.cfg.SessionTTL}).WithContext(ctx))
		if ctx.Err() != nil {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("watching %s: %w", l.cfg.Key, err)
		}
		if pair != nil && pair.Session != "" {
			index, freeRefused = meta.LastIndex, false
			continue
		}
		index = 0
		if freeRefused && !retry.Sleep(ctx, min(l.cfg.LockDelay/4+10*time.Millisecond, 250*time.Millisecond)) {
			return false, nil
		}
		freeRefused = true
	}
}

// lead runs Establish, waits for the loss of the lock, and runs Revoke before returning (so
// before term releases the lock).
func (l *Leadership) lead(ctx context.Context, session string, renewDone <-chan struct{}) error {
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The monitor ends leadCtx as soon as the lock is lost, so an Establish still running
	// (restoring state) stops at once instead of finishing for a leader that no longer is.
	lost := make(chan string, 1)
	go l.monitor(leadCtx, session, renewDone, func(reason string) { lost <- reason; cancel() })

	l.logger.Info("leader elected: this server holds the lock", "key", l.cfg.Key, "server", l.cfg.Name)
	l.emit(events.Event{Kind: events.LeaderElected, Fields: map[string]string{"lock": l.cfg.Key, "server": l.cfg.Name}})
	if err := l.cfg.Establish(leadCtx); err != nil {
		cancel()
		l.cfg.Revoke()
		select {
		case reason := <-lost: // the lock went while establishing: that is the cause
			l.logger.Warn("leadership lost while establishing", "key", l.cfg.Key, "reason", reason, "error", err)
			l.emit(events.Event{Kind: events.LeadershipLost, Severity: events.Warning, Message: err.Error(),
				Fields: map[string]string{"lock": l.cfg.Key, "server": l.cfg.Name, "reason": reason}})
			return nil
		default:
		}
		l.emit(events.Event{Kind: events.LeadershipLost, Severity: events.Warning, Message: err.Error(),
			Fields: map[string]string{"lock": l.cfg.Key, "server": l.cfg.Name, "reason": ReasonEstablishFailed}})
		return fmt.Errorf("establishing leadership: %w", err)
	}
	l.setLeader(true)
	var reason string
	select {
	case reason = <-lost:
	case <-ctx.Done():
		reason = ReasonShutdown
	}
	l.setLeader(false)
	cancel()
	l.cfg.Revoke()
	l.logger.Warn("leadership lost", "key", l.cfg.Key, "server", l.cfg.Name, "reason", reason)
	l.emit(events.Event{Kind: events.LeadershipLost, Severity: events.Warning,
		Fields: map[string]string{"lock": l.cfg.Key, "server": l.cfg.Name, "reason": reason}})
	return nil
}

// monitor reports on lost why the lock is no longer ours: the key changed hands, or the
// session's renewals stopped.
func (l *Leadership) monitor(ctx context.Context, session string, renewDone <-chan struct{}, lost func(reason string)) {
	type answer struct {
		pair  *api.KVPair
		index uint64
		err   error
	}
	var index uint64
	failures := 0
	for {
		ch := make(chan answer, 1)
		go func(index uint64) {
			p, m, err := l.cfg.Client.KV().Get(l.cfg.Key, (&api.QueryOptions{RequireConsistent: true, WaitIndex: index,
				WaitTime: l.cfg.SessionTTL}).WithContext(ctx))
			a := answer{pair: p, err: err}
			if m != nil {
				a.index = m.LastIndex
			}
			ch <- a
		}(index)
		var a answer
		select {
		case <-ctx.Done():
			return
		case <-renewDone:
			lost(ReasonSessionInvalidated)
			return
		case a = <-ch:
		}
		if a.err != nil {
			// Consul unreachable: keep leading while the session may still be alive (its
			// renewals stop after SessionTTL of failures, which ends the term).
			failures++
			if !retry.Sleep(ctx, retry.Backoff(100*time.Millisecond, time.Second, failures)) {
				return
			}
			continue
		}
		failures = 0
		if a.pair == nil || a.pair.Session != session {
			lost(l.lossReason(ctx, session))
			return
		}
		index = a.index
	}
}

// lossReason tells a destroyed or expired session from a key released or taken under a live one.
func (l *Leadership) lossReason(ctx context.Context, session string) string {
	se, _, err := l.cfg.Client.Session().Info(session, (&api.QueryOptions{}).WithContext(ctx))
	if err == nil && se == nil {
		return ReasonSessionInvalidated
	}
	return ReasonLockLost
}

func (l *Leadership) emit(e events.Event) {
	if l.cfg.Events != nil {
		l.cfg.Events.Emit(e)
	}
}
