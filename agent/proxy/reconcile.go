package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	"github.com/nullnet/nullnet/lib/retry"
	pb "github.com/nullnet/nullnet/proto"
)

// Mapping is one TCP, UDP or TLS entry of the port table as the proxy uses it.
type Mapping struct {
	Protocol Protocol
	Port     uint16
	// Service is the service relayed to. A TLS listener routes to several: Service holds their
	// names, sorted and comma-separated (tlsRoutes), so that a Mapping stays comparable and a
	// change of the set is an in-place update like any other.
	Service     string
	Stack       string
	IdleTimeout time.Duration // 0 = the mapping never idles out (UDP uses the configured default)
}

func (m Mapping) key() listenerKey { return listenerKey{m.Protocol, m.Port} }

func (m Mapping) String() string { return fmt.Sprintf("%s/%d→%q", m.Protocol, m.Port, m.Service) }

// listenerKey identifies a listener: the same port may carry one TCP (or TLS) and one UDP
// listener.
type listenerKey struct {
	Protocol Protocol
	Port     uint16
}

// desiredTable turns a pushed bundle into the listeners the proxy should have. HTTP entries are
// served by the HTTP router and skipped; entries that cannot be bound are returned as problems.
func desiredTable(b *pb.PortMappingBundle) (map[listenerKey]Mapping, []string) {
	want := make(map[listenerKey]Mapping, len(b.GetMappings()))
	var problems []string
	tlsPorts := map[uint16]*tlsGroup{} // tls services share their port: one listener each
	for _, e := range b.GetMappings() {
		var p Protocol
		switch e.GetProtocol() {
		case pb.ServiceProtocol_SERVICE_PROTOCOL_TCP:
			p = TCP
		case pb.ServiceProtocol_SERVICE_PROTOCOL_UDP:
			p = UDP
		case pb.ServiceProtocol_SERVICE_PROTOCOL_TLS:
			p = TLS
		default:
			continue
		}
		if !config.ValidServiceName(e.GetService()) {
			// The server validated the stacks; a name that fails the same rule here is a bug or
			// a hostile peer, and would otherwise reach logs and metric labels unbounded.
			problems = append(problems, fmt.Sprintf("%s port %d: invalid service name %.80q", p, e.GetListenPort(), e.GetService()))
			continue
		}
		if e.GetListenPort() == 0 || e.GetListenPort() > 65535 {
			problems = append(problems, fmt.Sprintf("%s %q: listen port %d out of range", p, e.GetService(), e.GetListenPort()))
			continue
		}
		// Seconds past what a Duration holds would wrap (negative or tiny): cap them.
		secs := min(e.GetIdleTimeoutSecs(), uint64(math.MaxInt64/int64(time.Second)))
		m := Mapping{Protocol: p, Port: uint16(e.GetListenPort()), Service: e.GetService(), Stack: e.GetStack(),
			IdleTimeout: time.Duration(secs) * time.Second}
		if p == TLS {
			g := tlsPorts[m.Port]
			if g == nil {
				g = &tlsGroup{}
				tlsPorts[m.Port] = g
			}
			g.add(m)
			continue
		}
		if prev, dup := want[m.key()]; dup {
			problems = append(problems, fmt.Sprintf("%s/%d listed twice (%q and %q); keeping %q",
				p, m.Port, prev.Service, m.Service, m.Service))
		}
		want[m.key()] = m
	}
	for port, g := range tlsPorts {
		m := g.mapping(port)
		want[m.key()] = m
	}
	return want, problems
}

// tableDiff is what a reconcile must do.
type tableDiff struct {
	Open   []Mapping     // new keys
	Close  []listenerKey // keys no longer wanted
	Update []Mapping     // same key, new service name / timeout: changed in place, no rebind
}

// diffTable compares running listeners with the desired table. Results are sorted so that logs
// and tests are deterministic.
func diffTable(running, want map[listenerKey]Mapping) tableDiff {
	var d tableDiff
	for k, m := range want {
		cur, ok := running[k]
		switch {
		case !ok:
			d.Open = append(d.Open, m)
		case cur != m:
			d.Update = append(d.Update, m)
		}
	}
	for k := range running {
		if _, ok := want[k]; !ok {
			d.Close = append(d.Close, k)
		}
	}
	byKey := func(a, b listenerKey) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	}
	slices.SortFunc(d.Open, func(a, b Mapping) int { return byKey(a.key(), b.key()) })
	slices.SortFunc(d.Update, func(a, b Mapping) int { return byKey(a.key(), b.key()) })
	slices.SortFunc(d.Close, byKey)
	return d
}

// describeTable renders a table for the log line written on every push.
func describeTable(want map[listenerKey]Mapping) string {
	ms := make([]Mapping, 0, len(want))
	for _, m := range want {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Mapping) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s (timeout %s)", m, m.IdleTimeout)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// slot owns one listener key for as long as the table contains it: it binds, serves, and on a
// bind failure reports and retries with capped backoff. Its mapping can change in place.
type slot struct {
	mapping atomic.Pointer[Mapping]
	cancel  context.CancelFunc
	done    chan struct{}

	mu       sync.Mutex
	state    string // "binding", "listening", "bind_failed"
	lastErr  string
	failures int
	retryAt  time.Time
	since    time.Time
	active   func() int64 // live connections / sessions of the current listener
	srv      server       // the current listener, if bound
}

// server is a bound listener; serve blocks until ctx ends (then closes the socket) or the
// socket fails.
type server interface {
	serve(ctx context.Context) error
	activeCount() int64
}

// openFunc binds a listener for a slot.
type openFunc func(s *slot) (server, error)

func (s *slot) setState(state, lastErr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != state {
		s.since = time.Now()
	}
	s.state, s.lastErr = state, lastErr
}

// reconcile applies a pushed table. It never touches listeners whose entry did not change.
func (p *Proxy) reconcile(version uint64, want map[listenerKey]Mapping) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining.Load() {
		// A drain closed the TCP listeners on purpose: a push must not open them again.
		p.logger.Info("port table not applied: draining", "version", version)
		return
	}
	running := make(map[listenerKey]Mapping, len(p.slots))
	for k, s := range p.slots {
		running[k] = *s.mapping.Load()
	}
	d := diffTable(running, want)
	for k, done := range p.closing {
		select {
		case <-done:
			delete(p.closing, k)
		default:
		}
	}
	for _, k := range d.Close {
		s := p.slots[k]
		delete(p.slots, k)
		s.cancel()
		// A quick re-add of this key must not race the old socket's close.
		p.closing[k] = s.done
		p.logger.Info("listener closing: mapping removed", "protocol", k.Protocol, "port", k.Port,
			"service", running[k].Service)
	}
	for _, m := range d.Update {
		old := running[m.key()]
		mc := m
		p.slots[m.key()].mapping.Store(&mc)
		p.logger.Info("listener updated in place", "protocol", m.Protocol, "port", m.Port,
			"service", m.Service, "previous_service", old.Service, "idle_timeout", m.IdleTimeout,
			"previous_idle_timeout", old.IdleTimeout)
	}
	for _, m := range d.Open {
		p.startSlotLocked(m)
	}
	p.tableVersion = version
}

// startSlotLocked starts the goroutine owning a listener key. p.mu must be held.
func (p *Proxy) startSlotLocked(m Mapping) {
	ctx, cancel := context.WithCancel(p.runCtx)
	s := &slot{cancel: cancel, done: make(chan struct{}), state: "binding", since: time.Now()}
	mc := m
	s.mapping.Store(&mc)
	p.slots[m.key()] = s
	open := p.openTCP
	if m.Protocol == UDP {
		open = p.openUDP
	}
	prev := p.closing[m.key()]
	delete(p.closing, m.key())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(s.done)
		if prev != nil {
			select { // the previous listener of this key is still closing its socket
			case <-prev:
			case <-ctx.Done():
				return
			}
		}
		p.runSlot(ctx, s, open)
	}()
}

// runSlot binds and serves until ctx ends, retrying bind failures with capped, jittered backoff.
func (p *Proxy) runSlot(ctx context.Context, s *slot, open openFunc) {
	backoff := p.bindRetryMin
	for ctx.Err() == nil {
		m := s.mapping.Load()
		srv, err := open(s)
		if err != nil {
			s.mu.Lock()
			s.failures++
			first := s.failures == 1 || s.lastErr != err.Error()
			s.retryAt = time.Now().Add(backoff)
			s.mu.Unlock()
			s.setState("bind_failed", err.Error())
			kind := events.TCPListenerBindFailed
			if m.Protocol == UDP {
				kind = events.UDPListenerBindFailed
			}
			p.listenerMetric(m, "bind_failed")
			if first {
				// One event per distinct failure, not per retry: a port held for hours must not
				// flood the event ring.
				p.events.Emit(events.Event{Kind: kind, Severity: events.Error,
					Message: fmt.Sprintf("cannot listen on %s port %d for %q; retrying", m.Protocol, m.Port, m.Service),
					Fields: map[string]string{"protocol": string(m.Protocol), "port": fmt.Sprint(m.Port),
						"service": m.Service, "error": err.Error()}})
			}
			p.logger.Warn("listener bind failed; will retry", "protocol", m.Protocol, "port", m.Port,
				"service", m.Service, "error", err, "retry_in", backoff, "attempt", s.failures)
			if !retry.Sleep(ctx, retry.Jitter(backoff, 0.2)) {
				break
			}
			backoff = min(backoff*2, p.bindRetryMax)
			continue
		}
		backoff = p.bindRetryMin
		s.mu.Lock()
		s.failures, s.retryAt, s.active, s.srv = 0, time.Time{}, srv.activeCount, srv
		s.mu.Unlock()
		s.setState("listening", "")
		p.logger.Info("listener opened", "protocol", m.Protocol, "port", m.Port, "service", m.Service,
			"bind_addr", p.settings().BindAddr)
		p.events.Emit(events.Event{Kind: events.ListenerOpened, Severity: events.Info,
			Message: fmt.Sprintf("listening on %s port %d for %q", m.Protocol, m.Port, m.Service),
			Fields:  map[string]string{"protocol": string(m.Protocol), "port": fmt.Sprint(m.Port), "service": m.Service}})
		err = srv.serve(ctx)
		m = s.mapping.Load()
		if ctx.Err() != nil {
			p.logger.Info("listener closed", "protocol", m.Protocol, "port", m.Port, "service", m.Service)
			p.events.Emit(events.Event{Kind: events.ListenerClosed, Severity: events.Info,
				Message: fmt.Sprintf("closed %s port %d (%q)", m.Protocol, m.Port, m.Service),
				Fields:  map[string]string{"protocol": string(m.Protocol), "port": fmt.Sprint(m.Port), "service": m.Service}})
			return
		}
		// The socket failed under us (rare): rebind.
		p.logger.Error("listener failed; rebinding", "protocol", m.Protocol, "port", m.Port, "error", err)
		s.setState("binding", errString(err))
		if !retry.Sleep(ctx, retry.Jitter(backoff, 0.2)) {
			return
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// errClosed is what serve returns when its socket was closed because ctx ended.
var errClosed = errors.New("listener closed")
