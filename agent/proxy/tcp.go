package proxy

import (
	"context"
	"errors"
	"fmt"
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
