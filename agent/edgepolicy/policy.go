package edgepolicy

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nullnet/nullnet/config"
)

// Spec is a service's policy as configured (the port table's ServicePolicy, without the
// fields other parts of the proxy handle).
type Spec struct {
	Allow, Deny             []string
	MaxConnectionsPerClient int
	// RatePerSecond and Burst are the token bucket of each client's new connections; a rate
	// of 0 means no limit, a burst of 0 means DefaultBurst(rate).
	RatePerSecond float64
	Burst         int
	MaxSessions   int
}

// IsZero reports whether the spec limits nothing.
func (s Spec) IsZero() bool {
	return len(s.Allow) == 0 && len(s.Deny) == 0 && s.MaxConnectionsPerClient <= 0 && s.RatePerSecond <= 0 &&
		s.MaxSessions <= 0
}

// DefaultBurst is the bucket size when a rate has no explicit burst: one second's worth,
// rounded up ("20/s" lets a client open 20 connections at once, then 20 a second; "600/m"
// is 10 a second with a burst of 10).
func DefaultBurst(perSecond float64) int {
	return max(1, int(math.Ceil(perSecond)))
}

// Rules is a compiled Spec, built once per port table and shared by every connection.
type Rules struct {
	allow, deny  *Matcher // allow nil = everyone not denied
	maxPerClient int
	rate, burst  float64
	maxSessions  int64
}

// Compile checks and compiles a spec.
func Compile(s Spec) (*Rules, error) {
	r := &Rules{maxPerClient: max(0, s.MaxConnectionsPerClient), maxSessions: int64(max(0, s.MaxSessions))}
	if len(s.Allow) > 0 {
		ps, err := config.ParsePrefixes(s.Allow)
		if err != nil {
			return nil, fmt.Errorf("allow: %w", err)
		}
		r.allow = NewMatcher(ps)
	}
	if len(s.Deny) > 0 {
		ps, err := config.ParsePrefixes(s.Deny)
		if err != nil {
			return nil, fmt.Errorf("deny: %w", err)
		}
		r.deny = NewMatcher(ps)
	}
	if s.RatePerSecond < 0 || math.IsNaN(s.RatePerSecond) || math.IsInf(s.RatePerSecond, 0) {
		return nil, fmt.Errorf("new connections per client: invalid rate %v", s.RatePerSecond)
	}
	if s.RatePerSecond > 0 {
		r.rate = s.RatePerSecond
		r.burst = float64(s.Burst)
		if s.Burst <= 0 {
			r.burst = float64(DefaultBurst(s.RatePerSecond))
		}
	}
	return r, nil
}

// perClient reports whether the rules keep state per client address.
func (r *Rules) perClient() bool { return r.maxPerClient > 0 || r.rate > 0 }

// Allows reports whether the lists let a client in (Admitted) or why not. It keeps no state,
// so a listener can check it before spending anything else on the client.
func (r *Rules) Allows(a netip.Addr) Reason {
	if r == nil {
		return Admitted
	}
	if r.deny != nil && r.deny.Contains(a) {
		return Denied
	}
	if r.allow != nil && !r.allow.Contains(a) {
		return NotAllowed
	}
	return Admitted
}

// Reason is why a client was refused (or Admitted).
type Reason uint8

// Reasons, in the order of the checks.
const (
	Admitted          Reason = iota
	Denied                   // in the deny list
	NotAllowed               // an allow list is set and the client is not in it
	ServiceSessions          // max_sessions reached
	ClientConnections        // max_connections_per_client reached
	ClientRate               // new_connections_per_client: the client's bucket is empty
	NumReasons
)

var reasonNames = [NumReasons]string{"admitted", "denied", "not_allowed", "max_sessions",
	"max_connections_per_client", "new_connections_per_client"}

// String is the reason's metric label and event field.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Listed reports whether the reason is an allow/deny list refusal (HTTP 403) rather than a
// limit (HTTP 429).
func (r Reason) Listed() bool { return r == Denied || r == NotAllowed }

// MaxClients bounds the per-client table of one service. An entry costs about 100 bytes, so a
// service's table stays under 2 MB whatever the number of source addresses; when it is full the
// least recently active client without an open connection is forgotten (it loses the rest of
// its bucket's history and nothing else). Clients with open connections are never forgotten;
// there are at most as many as open connections. If every entry has one, a new client is
// admitted without per-client limits (max_sessions and the listener's own bounds still apply).
const MaxClients = 1 << 14

// Service is one service's admission state. Its rules can be replaced at any time (a new port
// table) without losing the counts of open connections.
type Service struct {
	rules    atomic.Pointer[Rules]
	sessions atomic.Int64
	refused  [NumReasons]atomic.Uint64
	takeMu   sync.Mutex
	taken    [NumReasons]uint64 // Refused at the last TakeRefused

	mu      sync.Mutex
	clients map[netip.Addr]*client
	idle    client // sentinel of the ring of clients without open connections, most recent first
	max     int
	reports reporter
}

// client is one address's open connections and token bucket. Clients with open == 0 are in the
// service's idle ring, from which the least recent is evicted when the table is full.
type client struct {
	addr netip.Addr
	open int
	Bucket
	prev, next *client
}

// NewService returns a service with no rules (everyone admitted).
func NewService() *Service { return newService(MaxClients) }

func newService(maxClients int) *Service {
	s := &Service{clients: map[netip.Addr]*client{}, max: maxClients}
	s.idle.prev, s.idle.next = &s.idle, &s.idle
	s.reports.init()
	return s
}

// SetRules replaces the rules (nil = none). Open connections keep their tickets; new limits
// apply to the next arrivals.
func (s *Service) SetRules(r *Rules) { s.rules.Store(r) }

// Rules returns the current rules (nil = none).
func (s *Service) Rules() *Rules { return s.rules.Load() }

// Sessions is the number of open tickets.
func (s *Service) Sessions() int64 { return s.sessions.Load() }

// Ticket is an admitted connection, session or request; Release it exactly once when it ends.
type Ticket struct {
	s *Service
	c *client // nil when the client has no per-client state
}

// Release gives the ticket's place back. The zero Ticket's Release does nothing.
func (t Ticket) Release() {
	if t.s == nil {
		return
	}
	t.s.sessions.Add(-1)
	if t.c == nil {
		return
	}
	t.s.mu.Lock()
	if t.c.open--; t.c.open == 0 {
		t.s.pushIdle(t.c)
	}
	t.s.mu.Unlock()
}

// Decision is Admit's answer.
type Decision struct {
	Reason Reason
	// Report is true for the first refusal of this client in the current minute: the caller
	// emits one event for it; later refusals are only counted (and summed in Flush).
	Report bool
}

// Admit decides whether client a may open a connection (session, request) now; now is unix
// nanoseconds. An admitted client gets a Ticket to release when it ends.
func (s *Service) Admit(a netip.Addr, now int64) (Ticket, Decision) {
	r := s.rules.Load()
	if r == nil {
		return Ticket{}, Decision{}
	}
	a = a.Unmap().WithZone("") // one entry per address, whatever interface it came through
	if why := r.Allows(a); why != Admitted {
		return Ticket{}, s.refuse(a, why, now)
	}
	n := s.sessions.Add(1)
	if r.maxSessions > 0 && n > r.maxSessions {
		s.sessions.Add(-1)
		return Ticket{}, s.refuse(a, ServiceSessions, now)
	}
	t := Ticket{s: s}
	if !r.perClient() {
		return t, Decision{}
	}
	s.mu.Lock()
	c := s.clients[a]
	if c == nil {
		if c = s.newClientLocked(a); c == nil {
			s.mu.Unlock()
			return t, Decision{} // table full of clients with open connections: see MaxClients
		}
	}
	if r.maxPerClient > 0 && c.open >= r.maxPerClient {
		s.mu.Unlock()
		s.sessions.Add(-1)
		return Ticket{}, s.refuse(a, ClientConnections, now)
	}
	if r.rate > 0 {
		c.Refill(now, r.rate, r.burst)
		if c.Tokens < 1 {
			if c.open == 0 {
				s.pushIdle(c) // most recent again
			}
			s.mu.Unlock()
			s.sessions.Add(-1)
			return Ticket{}, s.refuse(a, ClientRate, now)
		}
		c.Tokens--
	}
	if c.open == 0 {
		unlink(c)
	}
	c.open++
	s.mu.Unlock()
	t.c = c
	return t, Decision{}
}

func (s *Service) refuse(a netip.Addr, why Reason, now int64) Decision {
	s.refused[why].Add(1)
	return Decision{Reason: why, Report: s.reports.note(a, now)}
}

// newClientLocked adds a client (idle, full bucket), evicting the least recently active idle
// client if the table is full; nil if it is full of clients with open connections.
func (s *Service) newClientLocked(a netip.Addr) *client {
	if len(s.clients) >= s.max {
		old := s.idle.prev
		if old == &s.idle {
			return nil
		}
		unlink(old)
		delete(s.clients, old.addr)
	}
	c := &client{addr: a}
	s.clients[a] = c
	s.pushIdle(c)
	return c
}

// pushIdle puts c at the front (most recent) of the idle ring, unlinking it first if needed.
func (s *Service) pushIdle(c *client) {
	if c.next != nil {
		unlink(c)
	}
	c.prev, c.next = &s.idle, s.idle.next
	s.idle.next.prev = c
	s.idle.next = c
}

func unlink(c *client) {
	c.prev.next = c.next
	c.next.prev = c.prev
	c.prev, c.next = nil, nil
}

// Bucket is a token bucket: it holds up to burst tokens and gains rate tokens a second. The
// zero Bucket is full at its first Refill. The per-client limits and the proxy's UDP
// new-session limits share it.
type Bucket struct {
	Tokens float64
	last   int64 // unix nanoseconds of the last refill; 0 = never used (full)
}

// Refill brings the bucket to now (unix nanoseconds); a clock step back adds nothing.
func (b *Bucket) Refill(now int64, rate, burst float64) {
	if b.last == 0 {
		b.Tokens, b.last = burst, now
		return
	}
	if now > b.last {
		b.Tokens = min(burst, b.Tokens+float64(now-b.last)*rate/float64(time.Second))
		b.last = now
	}
}

// Sweep forgets the idle clients whose bucket has refilled (they are as good as new), so that
// the table shrinks back after a flood. Call it every few seconds.
func (s *Service) Sweep(now int64) {
	r := s.rules.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := s.idle.prev; c != &s.idle; {
		prev := c.prev
		if r == nil || r.rate == 0 {
			unlink(c)
			delete(s.clients, c.addr)
		} else {
			c.Refill(now, r.rate, r.burst)
			if c.Tokens >= r.burst {
				unlink(c)
				delete(s.clients, c.addr)
			}
		}
		c = prev
	}
}

// Clients is the size of the per-client table.
func (s *Service) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// Refused returns, per reason, the refusals counted since the service was made.
func (s *Service) Refused() [NumReasons]uint64 {
	var out [NumReasons]uint64
	for i := range out {
		out[i] = s.refused[i].Load()
	}
	return out
}

// TakeRefused returns, per reason, the refusals counted since its last call (for metrics).
func (s *Service) TakeRefused() [NumReasons]uint64 {
	s.takeMu.Lock()
	defer s.takeMu.Unlock()
	now := s.Refused()
	var out [NumReasons]uint64
	for i := range out {
		out[i] = now[i] - s.taken[i]
	}
	s.taken = now
	return out
}
