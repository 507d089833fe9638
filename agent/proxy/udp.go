package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/proxyproto"
	"github.com/nullnet/nullnet/lib/retry"
	"golang.org/x/sys/unix"
)

// maxDatagram is the largest UDP payload; every read uses a buffer this big, and every datagram
// that has to be kept is copied into a slice of its own size.
const maxDatagram = 64 << 10

// Drop reasons (metric label "reason").
const (
	dropSessionLimit = iota
	dropQueueFull
	dropLookupFailed
	dropUpstreamWrite
	dropClientWrite
	dropClosing
	dropNewSessionRate   // udp_new_session_rate: the listener admits no more new sessions now
	dropPrefixRate       // udp_new_session_rate_per_prefix: the source's /24 or /64 is over its rate
	dropResolveQueueFull // maxResolveQueue new sessions already wait for a resolver
	dropResolveWait      // a new session waited longer than maxResolveWait for a resolver
	dropPolicy           // the service's client policy refused the client (edge.go)
	numDropReasons
)

var dropNames = [numDropReasons]string{"session_limit", "queue_full", "lookup_failed", "upstream_write",
	"client_write", "closing", "new_session_rate", "prefix_rate", "resolve_queue_full", "resolve_wait", "policy"}

// maxUDPResolvers bounds the goroutines resolving new sessions of one listener. A burst of new
// clients queues instead of starting a goroutine (and a stack grown by a gRPC call) per
// session, memory the runtime would keep long after the burst; each queued session keeps its
// own bounded datagram queue meanwhile.
const maxUDPResolvers = 64

// udpListener is one UDP mapping: a socket, one reader goroutine, a session per client address,
// a sweeper, and up to maxUDPResolvers goroutines resolving new sessions while any wait.
type udpListener struct {
	p      *Proxy
	slot   *slot
	conn   *net.UDPConn
	logger hclog.Logger

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
	closing  bool
	active   atomic.Int64

	resolveQ  []*udpSession // new sessions waiting for a resolver; guarded by mu
	resolvers int           // goroutines draining resolveQ; guarded by mu
	admit     admission     // new-session rate limits (udp_admit.go); guarded by mu

	poller *replyPoller
	wg     sync.WaitGroup // resolvers

	// Counters, flushed to go-metrics on every sweep (per-datagram metric calls would cost more
	// than the relay itself).
	drops                                                [numDropReasons]atomic.Uint64
	dgToUp, dgToClient, bytesToUp, bytesToClient, starts atomic.Uint64
	headersSent                                          atomic.Uint64 // PROXY headers written upstream
	flushed                                              [numDropReasons + 6]uint64
	lastLimitEvent                                       time.Time
	// Admission refusals already logged, and when (one line per 10 s at most; sweep goroutine).
	limitLogged [4]uint64
	limitLogAt  time.Time
}

func (p *Proxy) openUDP(s *slot) (server, error) {
	m := s.mapping.Load()
	addr := net.JoinHostPort(p.settings().BindAddr, strconv.Itoa(int(m.Port)))
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	logger := p.logger.With("protocol", "udp", "port", m.Port)
	if want := p.settings().UDPReceiveBuffer; want > 0 {
		got, how, err := setReceiveBuffer(pc.(*net.UDPConn), want)
		switch {
		case err != nil:
			logger.Warn("cannot size the UDP receive buffer; keeping the kernel's", "want", want, "error", err)
		case got < want:
			logger.Warn("UDP receive buffer smaller than proxy.udp_receive_buffer: run as root (CAP_NET_ADMIN) or raise net.core.rmem_max",
				"want", want, "got", got)
		default:
			logger.Debug("UDP receive buffer sized", "bytes", got, "via", how)
		}
	}
	rp, err := newReplyPoller()
	if err != nil {
		pc.Close()
		return nil, err
	}
	return &udpListener{p: p, slot: s, conn: pc.(*net.UDPConn), sessions: map[netip.AddrPort]*udpSession{},
		poller: rp, logger: logger}, nil
}

// setReceiveBuffer sizes a listening socket's receive buffer to want bytes: SO_RCVBUFFORCE
// first (root or CAP_NET_ADMIN may exceed net.core.rmem_max), else SO_RCVBUF (capped by
// rmem_max). It returns what the socket got (the kernel reports twice the value set, as it
// counts its own overhead; that is halved here) and which option did it.
func setReceiveBuffer(c *net.UDPConn, want int) (int, string, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, "", err
	}
	var got int
	var how string
	var serr error
	err = rc.Control(func(fd uintptr) {
		how = "SO_RCVBUFFORCE"
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, want); serr != nil {
			how = "SO_RCVBUF"
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, want); serr != nil {
				return
			}
		}
		got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		got /= 2
	})
	if err == nil {
		err = serr
	}
	return got, how, err
}

func (l *udpListener) activeCount() int64 { return l.active.Load() }

// serve runs the reader and the sweeper until ctx ends, then ends every session (a UDP session
// replies through the listening socket, so it cannot outlive it).
func (l *udpListener) serve(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sweepDone := make(chan struct{})
	go func() { defer close(sweepDone); l.sweepLoop(sctx) }()
	go l.poller.run(l)
	stop := context.AfterFunc(ctx, func() { l.conn.Close() })
	defer stop()

	err := l.readLoop(sctx)
	cancel()
	l.conn.Close()
	<-sweepDone

	l.mu.Lock()
	l.closing = true
	all := l.sessions
	l.sessions = map[netip.AddrPort]*udpSession{}
	l.mu.Unlock()
	for _, s := range all {
		s.end("listener closed")
	}
	l.wg.Wait() // resolutions in flight see the closed sessions and give their leases back
	l.poller.stop()
	l.flushMetrics()
	if ctx.Err() != nil {
		return errClosed
	}
	return err
}

// listenerBatch is how many datagrams one recvmmsg(2) on the listening socket takes at most.
const listenerBatch = 16

// readLoop is the only reader of the listening socket. It never waits on the network for
// anything but the next datagrams: resolution runs in the resolvers.
func (l *udpListener) readLoop(ctx context.Context) error {
	rc, err := l.conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("udp listener: %w", err)
	}
	b, err := newDatagramBatch(listenerBatch)
	if err != nil {
		return err
	}
	defer b.free()
	var (
		n     int
		errno syscall.Errno
	)
	// Built once: a closure per wakeup would allocate.
	recv := func(fd uintptr) bool {
		for {
			n, errno = b.recv(fd, 0, b.slots(), true)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN // false parks until the socket is readable
			}
		}
	}
	var errDelay time.Duration
	for {
		if err := rc.Read(recv); err != nil {
			return err // closed
		}
		if errno != 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errDelay = min(max(2*errDelay, time.Millisecond), time.Second)
			l.logger.Warn("udp read failed", "error", errno)
			if !retry.Sleep(ctx, errDelay) {
				return ctx.Err()
			}
			continue
		}
		errDelay = 0
		// Consecutive datagrams of one client go to its session together: one sendmmsg(2)
		// on the session's socket instead of a write each.
		if n == 0 {
			continue
		}
		set := l.p.settings()
		addr, from := b.addr(0), 0
		for j := 1; j <= n; j++ {
			var next netip.AddrPort
			if j < n {
				if next = b.addr(j); next == addr {
					continue
				}
			}
			if set.sendsProxyHeader(addr.Addr()) {
				l.fromPeer(ctx, addr, b, from, j)
			} else {
				l.fromClient(ctx, addr, addr, netip.AddrPort{}, b, from, j)
			}
			addr, from = next, j
		}
	}
}

// fromClient hands slots [from, to) of b, datagrams from one peer address, to its session,
// creating the session if needed. client is the client behind the peer (the peer itself unless
// a PROXY header said otherwise) and local the address it reached (invalid: the listener's).
func (l *udpListener) fromClient(ctx context.Context, peer, client, local netip.AddrPort, b *datagramBatch, from, to int) {
	l.mu.Lock()
	s := l.sessions[peer]
	if s == nil {
		var reason int
		s, reason = l.newSessionLocked(ctx, peer, client, local, b.data(from))
		l.mu.Unlock()
		if s == nil { // refused: every datagram of the run is dropped
			l.drops[reason].Add(uint64(to - from))
			return
		}
		from++
	} else {
		l.mu.Unlock()
	}
	if from < to {
		s.fromClient(b, from, to)
	}
}

// newSessionLocked starts a session for a new peer address, queueing its first datagram, or
// refuses it and returns the drop reason. l.mu is held.
func (l *udpListener) newSessionLocked(ctx context.Context, peer, addr, local netip.AddrPort, first []byte) (*udpSession, int) {
	set := l.p.settings()
	if l.closing || l.p.draining.Load() {
		return nil, dropClosing // a drain admits no new client; known ones carry on
	}
	m := l.slot.mapping.Load()
	// The lists first: a refused client must not take the listener's new-session tokens.
	edge := l.p.edge.Load().lookup(m.Service)
	if edge != nil && edge.Rules().Allows(addr.Addr()) != edgepolicy.Admitted {
		l.p.admitClient(m.Service, UDP, addr.Addr()) // counts and reports the refusal
		return nil, dropPolicy
	}
	if len(l.resolveQ) >= maxResolveQueue {
		return nil, dropResolveQueueFull
	}
	if ok, reason := l.admit.admit(time.Now().UnixNano(), addr.Addr(), set.UDPNewSessionRate,
		set.UDPNewSessionRatePerPrefix); !ok {
		return nil, reason
	}
	if len(l.sessions) >= set.UDPMaxSessions {
		if time.Since(l.lastLimitEvent) > 10*time.Second {
			l.lastLimitEvent = time.Now()
			l.p.events.Emit(events.Event{Kind: events.UDPSessionLimitReached, Severity: events.Warning,
				Message: fmt.Sprintf("udp port %d (%q) has %d sessions; new clients are dropped", m.Port, m.Service, len(l.sessions)),
				Fields:  map[string]string{"port": fmt.Sprint(m.Port), "service": m.Service, "limit": fmt.Sprint(set.UDPMaxSessions)}})
		}
		return nil, dropSessionLimit
	}
	ticket, why := l.p.admitClient(m.Service, UDP, addr.Addr())
	if why != edgepolicy.Admitted {
		return nil, dropPolicy
	}
	now := time.Now()
	s := &udpSession{l: l, peer: peer, client: addr, local: local, service: m.Service, created: now, fd: -1,
		queue: [][]byte{clone(first)}, ticket: ticket}
	// Activity starts at creation, never at the zero time (Traefik #13044).
	s.lastActive.Store(now.UnixNano())
	s.countToUp(len(first))
	l.sessions[peer] = s
	l.active.Add(1)
	l.starts.Add(1)
	l.resolveQ = append(l.resolveQ, s)
	if l.resolvers < maxUDPResolvers {
		l.resolvers++
		l.wg.Add(1)
		go l.resolveLoop(ctx)
	}
	return s, 0
}

// resolveLoop resolves queued sessions in arrival order and ends when the queue is empty, so
// an idle listener has no resolver goroutine.
func (l *udpListener) resolveLoop(ctx context.Context) {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		if len(l.resolveQ) == 0 {
			l.resolvers--
			l.resolveQ = nil // let the burst's backing array go
			l.mu.Unlock()
			return
		}
		s := l.resolveQ[0]
		l.resolveQ[0] = nil
		l.resolveQ = l.resolveQ[1:]
		l.mu.Unlock()
		if time.Since(s.created) > maxResolveWait {
			s.dropStale()
			continue
		}
		s.resolve(ctx)
	}
}

// remove drops s from the table if it is still the session of its address.
func (l *udpListener) remove(s *udpSession) {
	l.mu.Lock()
	if l.sessions[s.peer] == s {
		delete(l.sessions, s.peer)
	}
	l.mu.Unlock()
}

func clone(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}

// idleTimeout is the mapping's timeout, or the configured default when the mapping has none.
func (l *udpListener) idleTimeout() time.Duration {
	if t := l.slot.mapping.Load().IdleTimeout; t > 0 {
		return t
	}
	return l.p.settings().UDPIdleTimeout
}

// sweepInterval checks often enough that a session outlives its timeout by at most a quarter.
func sweepInterval(idle time.Duration) time.Duration {
	return min(max(idle/4, 50*time.Millisecond), 5*time.Second)
}

func (l *udpListener) sweepLoop(ctx context.Context) {
	for {
		if !retry.Sleep(ctx, sweepInterval(l.idleTimeout())) {
			return
		}
		l.sweep(time.Now())
		l.flushMetrics()
		l.logAdmission(time.Now())
	}
}

// sweep ends every ready session idle for longer than the timeout (both directions count).
func (l *udpListener) sweep(now time.Time) {
	idle := l.idleTimeout()
	cutoff := now.Add(-idle).UnixNano()
	var expired []*udpSession
	l.mu.Lock()
	for addr, s := range l.sessions {
		if s.lastActive.Load() < cutoff && s.ready() {
			expired = append(expired, s)
			delete(l.sessions, addr)
		}
	}
	remaining := len(l.sessions)
	l.admit.prune(now.UnixNano(), l.p.settings().UDPNewSessionRatePerPrefix)
	l.mu.Unlock()
	for _, s := range expired {
		s.end(fmt.Sprintf("idle for %s", idle))
	}
	if len(expired) > 0 {
		l.logger.Info("udp sessions swept", "expired", len(expired), "remaining", remaining, "idle_timeout", idle)
	}
}

// logAdmission writes one line, at most every 10 s, with the new-session datagrams refused since
// the last one: a flood is seen in the log without a line per datagram. Called by the sweeper.
func (l *udpListener) logAdmission(now time.Time) {
	if now.Sub(l.limitLogAt) < 10*time.Second {
		return
	}
	var d [4]uint64
	for i, r := range []int{dropNewSessionRate, dropPrefixRate, dropResolveQueueFull, dropResolveWait} {
		v := l.drops[r].Load()
		d[i], l.limitLogged[i] = v-l.limitLogged[i], v
	}
	if d[0]+d[1]+d[2]+d[3] == 0 {
		return
	}
	l.limitLogAt = now
	set := l.p.settings()
	l.logger.Warn("udp new sessions refused (flood of new client addresses?)", "over_listener_rate", d[0],
		"over_prefix_rate", d[1], "resolve_queue_full", d[2], "resolve_wait", d[3], "rate", set.UDPNewSessionRate,
		"rate_per_prefix", set.UDPNewSessionRatePerPrefix, "sessions", l.active.Load())
}

// flushMetrics adds the counters' growth since the last flush to go-metrics and sets the
// sessions gauge (per-session gauge updates would cost a label set each).
func (l *udpListener) flushMetrics() {
	labels := listenerLabels(l.slot.mapping.Load())
	metrics.SetGaugeWithLabels([]string{"nullnet", "proxy", "udp", "sessions"}, float32(l.active.Load()), labels)
	add := func(i int, v uint64, name []string, extra ...metrics.Label) {
		if d := v - l.flushed[i]; d > 0 {
			l.flushed[i] = v
			metrics.IncrCounterWithLabels(name, float32(d), append(labels, extra...))
		}
	}
	for r := range numDropReasons {
		add(r, l.drops[r].Load(), []string{"nullnet", "proxy", "udp", "drops"}, metrics.Label{Name: "reason", Value: dropNames[r]})
	}
	add(numDropReasons, l.dgToUp.Load(), []string{"nullnet", "proxy", "udp", "datagrams"}, metrics.Label{Name: "direction", Value: "to_upstream"})
	add(numDropReasons+1, l.dgToClient.Load(), []string{"nullnet", "proxy", "udp", "datagrams"}, metrics.Label{Name: "direction", Value: "to_client"})
	add(numDropReasons+2, l.bytesToUp.Load(), []string{"nullnet", "proxy", "udp", "bytes"}, metrics.Label{Name: "direction", Value: "to_upstream"})
	add(numDropReasons+3, l.bytesToClient.Load(), []string{"nullnet", "proxy", "udp", "bytes"}, metrics.Label{Name: "direction", Value: "to_client"})
	add(numDropReasons+4, l.starts.Load(), []string{"nullnet", "proxy", "udp", "sessions_created"})
	if v := l.headersSent.Load(); v > l.flushed[numDropReasons+5] {
		countHeadersSent(labels, proxyproto.V2, v-l.flushed[numDropReasons+5])
		l.flushed[numDropReasons+5] = v
	}
}
