package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
)

// tcpListener accepts connections for one TCP mapping.
type tcpListener struct {
	p      *Proxy
	slot   *slot
	ln     *net.TCPListener
	active atomic.Int64
}

func (p *Proxy) openTCP(s *slot) (server, error) {
	m := s.mapping.Load()
	addr := net.JoinHostPort(p.settings().BindAddr, strconv.Itoa(int(m.Port)))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return &tcpListener{p: p, slot: s, ln: ln.(*net.TCPListener)}, nil
}

func (l *tcpListener) activeCount() int64 { return l.active.Load() }

// serve accepts until ctx ends. Connections are owned by the proxy, not by the listener, so
// closing the listener leaves them running.
func (l *tcpListener) serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stop()
	defer l.ln.Close()
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
		labels := listenerLabels(m)
		metrics.SetGaugeWithLabels([]string{"nullnet", "proxy", "tcp", "active"}, float32(l.active.Add(1)), labels)
		l.p.wg.Add(1)
		go func() {
			defer l.p.wg.Done()
			l.p.handleTCP(c, m)
			metrics.SetGaugeWithLabels([]string{"nullnet", "proxy", "tcp", "active"}, float32(l.active.Add(-1)), labels)
		}()
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
// once and writes one log line when the connection ends.
func (p *Proxy) handleTCP(c *net.TCPConn, m *Mapping) {
	start := time.Now()
	labels := listenerLabels(m)
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "accepted"}, 1, labels)

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

	client := addrPortOf(c.RemoteAddr())
	log := p.logger.With("client", client.String(), "service", m.Service, "port", m.Port)
	log.Debug("tcp connection accepted")
	fail := func(kind string, err error) {
		metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "failures"}, 1,
			append(labels, metrics.Label{Name: "kind", Value: kind}))
		// A reset tells the client at once that nothing is behind the port, rather than an
		// accepted connection that just closes.
		_ = c.SetLinger(0)
		c.Close()
		log.Warn("tcp connection refused", "reason", kind, "error", err, "duration", time.Since(start))
	}

	lease, err := p.resolveUse(p.runCtx, client.Addr(), m.Service, TCP)
	if err != nil {
		kind := failureKind(err)
		p.events.Emit(events.Event{Kind: events.UpstreamLookupFailed, Severity: events.Warning,
			Message: fmt.Sprintf("no upstream for %q (tcp port %d)", m.Service, m.Port),
			Fields: map[string]string{"service": m.Service, "client_ip": client.Addr().String(),
				"protocol": "tcp", "error": err.Error()}})
		fail(kind, err)
		return
	}
	use := p.startUse(client.Addr(), m.Service, TCP, lease)
	defer p.endUse(use)
	log = log.With("upstream", lease.Upstream.String())
	log.Debug("upstream resolved", "lease", lease.LeaseID, "reused", lease.Reused, "took", time.Since(start))

	d := net.Dialer{Timeout: p.settings().DialTimeout}
	uc, err := d.DialContext(p.runCtx, "tcp", lease.Upstream.String())
	if err != nil {
		p.events.Emit(events.Event{Kind: events.TCPUpstreamConnectFailed, Severity: events.Warning,
			Message: fmt.Sprintf("cannot connect to %s for %q", lease.Upstream, m.Service),
			Fields: map[string]string{"service": m.Service, "upstream": lease.Upstream.String(),
				"client_ip": client.Addr().String(), "error": err.Error()}})
		fail("connect", err)
		return
	}
	u := uc.(*net.TCPConn)
	up.Store(u)
	if p.runCtx.Err() != nil { // shutdown raced with the dial
		u.Close()
		c.Close()
		return
	}

	toUp, toClient, reason := relay(c, u)
	if p.runCtx.Err() != nil {
		reason = "proxy shutdown"
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "bytes"}, float32(toUp),
		append(labels, metrics.Label{Name: "direction", Value: "to_upstream"}))
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tcp", "bytes"}, float32(toClient),
		append(labels, metrics.Label{Name: "direction", Value: "to_client"}))
	log.Info("tcp connection closed", "bytes_to_upstream", toUp, "bytes_to_client", toClient,
		"duration", time.Since(start).Round(time.Microsecond), "reason", reason)
}

// halfResult is the outcome of one copy direction.
type halfResult struct {
	n      int64
	err    error
	toUp   bool
	closed bool // the copy ended because the other direction tore the connection down
}

// relay copies both ways until both directions end. Both conns stay *net.TCPConn so io.Copy
// takes the splice(2) path on Linux; the byte counts are io.Copy's.
//
// A clean EOF in one direction is propagated with CloseWrite (half-close) and the other
// direction keeps going; an error (reset, broken pipe) aborts both sides with a reset so that
// neither end waits on a dead peer.
func relay(client, upstream *net.TCPConn) (toUp, toClient int64, reason string) {
	var aborted atomic.Bool
	var firstEOF atomic.Int32 // 0 none, 1 client, 2 upstream
	pipe := func(dst, src *net.TCPConn, toUp bool) halfResult {
		n, err := io.Copy(dst, src)
		if err == nil {
			who := int32(2)
			if toUp {
				who = 1
			}
			firstEOF.CompareAndSwap(0, who)
			// EOF from src: pass the FIN on. ENOTCONN (peer already gone) is fine to ignore.
			_ = dst.CloseWrite()
			return halfResult{n: n, toUp: toUp}
		}
		if aborted.Swap(true) {
			return halfResult{n: n, err: err, toUp: toUp, closed: true}
		}
		_ = src.SetLinger(0)
		_ = dst.SetLinger(0)
		src.Close()
		dst.Close()
		return halfResult{n: n, err: err, toUp: toUp}
	}
	done := make(chan halfResult, 1)
	go func() { done <- pipe(upstream, client, true) }()
	r1 := pipe(client, upstream, false)
	r2 := <-done
	client.Close()
	upstream.Close()

	first := r2
	for _, r := range []halfResult{r1, r2} {
		if r.toUp {
			toUp = r.n
		} else {
			toClient = r.n
		}
	}
	// The first direction to end explains the close; an error always wins over an EOF.
	switch {
	case r1.err != nil && !r1.closed:
		first = r1
	case r2.err != nil && !r2.closed:
		first = r2
	}
	switch {
	case first.err != nil && first.toUp:
		reason = "client→upstream copy failed: " + first.err.Error()
	case first.err != nil:
		reason = "upstream→client copy failed: " + first.err.Error()
	case firstEOF.Load() == 1:
		reason = "client closed first"
	default:
		reason = "upstream closed first"
	}
	return toUp, toClient, reason
}
