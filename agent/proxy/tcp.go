package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/proxyproto"
	"golang.org/x/sys/unix"
)

// tcpListener accepts connections for one TCP mapping.
type tcpListener struct {
	p      *Proxy
	slot   *slot
	ln     *net.TCPListener
	active atomic.Int64

	// Per-connection metrics are counted here and handed to go-metrics once a second
	// (flushMetrics): labelled metric calls cost more than the rest of a short connection's
	// user-space work.
	accepted, toUp, toClient atomic.Uint64
	headersSent              [3]atomic.Uint64 // PROXY headers written upstream, by version
	refused                  atomic.Uint64    // closed by the service's client policy
	closed                   atomic.Bool      // serve returned: connections flush as they end
}

// metricsFlushEvery is how often a TCP listener reports its connection metrics.
const metricsFlushEvery = time.Second

// flushMetrics reports what was counted since the last flush, and the active gauge.
func (l *tcpListener) flushMetrics() {
	labels := listenerLabels(l.slot.mapping.Load())
	if n := l.accepted.Swap(0); n > 0 {
		metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "accepted"}, float32(n), labels)
	}
	if n := l.refused.Swap(0); n > 0 {
		metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "failures"}, float32(n),
			append(labels, metrics.Label{Name: "kind", Value: "policy"}))
	}
	for _, d := range []struct {
		n   *atomic.Uint64
		dir string
	}{{&l.toUp, "to_upstream"}, {&l.toClient, "to_client"}} {
		if n := d.n.Swap(0); n > 0 {
			metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "bytes"}, float32(n),
				append(labels, metrics.Label{Name: "direction", Value: d.dir}))
		}
	}
	for _, v := range []proxyproto.Version{proxyproto.V1, proxyproto.V2} {
		countHeadersSent(labels, v, l.headersSent[v].Swap(0))
	}
	metrics.SetGaugeWithLabels([]string{"nullnet", "proxy", "tcp", "active"}, float32(l.active.Load()), labels)
}

func (p *Proxy) openTCP(s *slot) (server, error) {
	m := s.mapping.Load()
	// An unspecified bind address (0.0.0.0 or ::) is one dual-stack socket: Go opens AF_INET6
	// with IPV6_V6ONLY off when the host has IPv6 (AF_INET otherwise), so IPv6 clients reach
	// every service and IPv4 clients appear as a.b.c.d (addrPortOf unmaps). The same holds for
	// UDP listeners and the HTTP router (TestIPv6Clients).
	addr := net.JoinHostPort(p.settings().BindAddr, strconv.Itoa(int(m.Port)))
	ln, err := keepAliveListenConfig.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return &tcpListener{p: p, slot: s, ln: ln.(*net.TCPListener)}, nil
}

// Keepalive for accepted connections is set once, on the listening socket: Linux copies
// SO_KEEPALIVE and the TCP_KEEP* values into every connection it accepts, where Go's default
// would spend four setsockopt calls per connection. The values are Go's defaults (15 s idle,
// 15 s between probes, 9 probes).
const (
	keepAliveIdle     = 15
	keepAliveInterval = 15
	keepAliveCount    = 9
)

var keepAliveListenConfig = net.ListenConfig{
	KeepAlive: -1, // not per connection: inherited from the listener (Control)
	Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []struct{ level, opt, v int }{
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, keepAliveIdle},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, keepAliveInterval},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
			} {
				if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
					serr = fmt.Errorf("setsockopt keepalive: %w", serr)
					return
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	},
}

func (l *tcpListener) activeCount() int64 { return l.active.Load() }

// serve accepts until ctx ends. Connections are owned by the proxy, not by the listener, so
// closing the listener leaves them running.
func (l *tcpListener) serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stop()
	defer l.ln.Close()
	flusher := time.NewTicker(metricsFlushEvery)
	defer flusher.Stop()
	flushDone := make(chan struct{})
	go func() { // owned by serve: stops with it
		for {
			select {
			case <-flusher.C:
				l.flushMetrics()
			case <-flushDone:
				return
			}
		}
	}()
	defer func() {
		close(flushDone)
		l.closed.Store(true)
		l.flushMetrics()
	}()
	var delay time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil {
				return errClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Resource exhaustion (EMFILE, ENFILE, ENOBUFS): back off instead of spinning, like
			// net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m := l.slot.mapping.Load()
			l.p.logger.Error("tcp accept failed; backing off", "port", m.Port, "error", err, "retry_in", delay)
			metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "failures"}, 1,
				append(listenerLabels(m), metrics.Label{Name: "kind", Value: "accept"}))
			if !sleepCtx(ctx, delay) {
				return errClosed
			}
			continue
		}
		delay = 0
		m := l.slot.mapping.Load()
		l.active.Add(1)
		l.accepted.Add(1)
		l.p.wg.Add(1)
		l.p.workers.run(func() {
			defer l.p.wg.Done()
			l.p.handleTCP(c, m, l)
			l.active.Add(-1)
			if l.closed.Load() {
				l.flushMetrics()
			}
		})
	}
}

// addrPortOf returns the unmapped address of a net.Addr (IPv4-mapped IPv6 peers become IPv4).
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.TCPAddr:
		ap = v.AddrPort()
	case *net.UDPAddr:
		ap = v.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// handleTCP resolves, dials and relays one accepted connection. It releases the lease exactly
// once and writes one log line when the connection ends. On a tls listener it first routes the
// connection by SNI (routeTLS) and writes the ClientHello it read to the upstream before
// relaying.
func (p *Proxy) handleTCP(c *net.TCPConn, m *Mapping, l *tcpListener) {
	start := time.Now()

	var up atomic.Pointer[net.TCPConn]
	if !p.conns.add(c, func() {
		c.Close()
		if u := up.Load(); u != nil {
			u.Close()
		}
	}) {
		c.Close()
		return
	}
	defer p.conns.remove(c)

	// The client first: a trusted load balancer's PROXY header comes before anything else,
	// the ClientHello included.
	tc, err := p.readClient(c, m.Protocol)
	if err != nil { // a trusted load balancer without a valid header: nobody to serve
		_ = c.SetLinger(0)
		c.Close()
		return
	}
	var hello []byte // what routing read of the client's bytes: the upstream gets it first
	releaseHello := func() {}
	if m.Protocol == TLS {
		routed, read, release, ok := p.routeTLS(c, tc, m)
		if !ok {
			return
		}
		// Released once written, not held for the connection's life.
		m, hello, releaseHello = routed, read, sync.OnceFunc(release)
		defer releaseHello()
		tc.early = nil // read again by routeTLS: they are the start of hello
	}

	client := tc.client
	ticket, why := p.admitClient(m.Service, m.Protocol, client.Addr())
	if why != edgepolicy.Admitted {
		// Refused before any Proxy call: a reset at once (SO_LINGER 0), no FIN handshake, so a
		// flood costs the proxy one accept and one close per connection.
		_ = c.SetLinger(0)
		c.Close()
		l.refused.Add(1)
		return
	}
	defer ticket.Release()
	// The connection's fields are formatted only for a line that is written: a logger.With
	// per connection cost more than the rest of a short connection's user-space work.
	var upstream netip.AddrPort
	fields := func(kv ...any) []any {
		out := make([]any, 0, 8+len(kv))
		out = append(out, "client", client.String(), "service", m.Service, "port", m.Port)
		if tc.viaHeader {
			out = append(out, "via", tc.peer.String())
		}
		if upstream.IsValid() {
			out = append(out, "upstream", upstream.String())
		}
		return append(out, kv...)
	}
	debug := p.logger.IsDebug()
	if debug {
		p.logger.Debug("tcp connection accepted", fields()...)
	}
	fail := func(kind string, err error) {
		metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "failures"}, 1,
			append(listenerLabels(m), metrics.Label{Name: "kind", Value: kind}))
		// A reset tells the client at once that nothing is behind the port, rather than an
		// accepted connection that just closes.
		_ = c.SetLinger(0)
		c.Close()
		p.logger.Warn("tcp connection refused", fields("reason", kind, "error", err, "duration", time.Since(start))...)
	}

	lease, err := p.resolveUse(p.runCtx, client.Addr(), m.Service, m.Protocol)
	if err != nil {
		kind := failureKind(err)
		p.events.Emit(events.Event{Kind: events.UpstreamLookupFailed, Severity: events.Warning,
			Message: fmt.Sprintf("no upstream for %q (%s port %d)", m.Service, m.Protocol, m.Port),
			Fields: map[string]string{"service": m.Service, "client_ip": client.Addr().String(),
				"protocol": string(m.Protocol), "error": err.Error()}})
		fail(kind, err)
		return
	}
	d := net.Dialer{Timeout: p.settings().DialTimeout}
	uc, err := d.DialContext(p.runCtx, "tcp", lease.Upstream.String())
	if err != nil && lease.share != nil && p.runCtx.Err() == nil {
		// A shared upstream may be stale (the server replaced or removed the session while
		// other connections kept the share): stop sharing it and ask the server once more.
		if debug {
			p.logger.Debug("shared upstream failed; resolving again", fields("stale_upstream", lease.Upstream.String(), "error", err)...)
		}
		p.shares.Forget(lease)
		p.resolver.Release(lease)
		if lease, err = p.resolver.Resolve(p.runCtx, client.Addr(), m.Service, m.Protocol); err != nil {
			fail(failureKind(err), err)
			return
		}
		uc, err = d.DialContext(p.runCtx, "tcp", lease.Upstream.String())
	}
	if err != nil {
		p.resolver.Release(lease)
		p.events.Emit(events.Event{Kind: events.TCPUpstreamConnectFailed, Severity: events.Warning,
			Message: fmt.Sprintf("cannot connect to %s for %q", lease.Upstream, m.Service),
			Fields: map[string]string{"service": m.Service, "upstream": lease.Upstream.String(),
				"client_ip": client.Addr().String(), "error": err.Error()}})
		fail("connect", err)
		return
	}
	use := p.startUse(client.Addr(), m.Service, m.Protocol, lease, func() { c.Close(); uc.Close() })
	defer p.endUse(use)
	upstream = lease.Upstream
	if debug {
		p.logger.Debug("upstream resolved", fields("lease", lease.LeaseID, "reused", lease.Reused, "took", time.Since(start))...)
	}
	u := uc.(*net.TCPConn)
	up.Store(u)
	if p.runCtx.Err() != nil { // shutdown raced with the dial
		u.Close()
		c.Close()
		return
	}
	// The PROXY header (m is the routed service for tls), the client bytes read with a
	// received header, and the ClientHello: one write, before the relay.
	sendProxy := p.sendProxyFor(m)
	if sendProxy != proxyproto.None && len(hello) == 0 && len(tc.early) == 0 {
		// What the client already sent goes with the header: one write and one segment
		// rather than two (nothing is waited for: a server-first protocol gets the header
		// alone). firstBytes' buffer becomes hello's.
		var rerr error
		if hello, releaseHello, rerr = firstBytes(c); rerr != nil {
			_ = c.SetLinger(0)
			c.Close()
			u.Close()
			return
		}
	}
	helloLen := len(hello)
	err = writeProxyHeader(u, sendProxy, tc, hello)
	hello = nil
	releaseHello()
	var toUp, toClient int64
	var reason string
	if err != nil {
		_ = c.SetLinger(0)
		c.Close()
		u.Close()
		reason = "writing to the upstream failed: " + err.Error()
	} else {
		if sendProxy != proxyproto.None {
			l.headersSent[sendProxy].Add(1)
		}
		toUp, toClient, reason = relay(p.workers, c, u)
		toUp += int64(helloLen)
	}
	if p.runCtx.Err() != nil {
		reason = "proxy shutdown"
	} else if use.killed.Load() {
		reason = "replica unhealthy"
	}
	l.toUp.Add(uint64(toUp))
	l.toClient.Add(uint64(toClient))
	if p.logger.IsInfo() {
		p.logger.Info("tcp connection closed", fields("bytes_to_upstream", toUp, "bytes_to_client", toClient,
			"duration", time.Since(start).Round(time.Microsecond), "reason", reason)...)
	}
}
