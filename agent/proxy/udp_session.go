package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/proxyproto"
	"golang.org/x/sys/unix"
)

// Session states.
const (
	stateResolving int32 = iota
	stateReady
	stateClosed
)

// udpSession relays one client address through its own connected upstream socket. The socket is
// a raw non-blocking fd watched by the listener's replyPoller rather than a net.UDPConn with a
// goroutine, so an idle session costs a few hundred bytes and a file descriptor.
//
// mu guards state, fd, queue and lease. Anyone touching fd holds mu (read lock is enough) and
// checks state == stateReady: end closes the fd only after setting stateClosed under the write
// lock, so a recycled fd number can never be mistaken for this session's socket.
type udpSession struct {
	l *udpListener
	// peer is the datagrams' source and the replies' destination (the session's key); client is
	// the client's address, the peer's own unless a trusted front load balancer's PROXY header
	// gave it (then local is the address the header says the client reached).
	peer, client, local netip.AddrPort
	// ppHdr, when the service sends PROXY headers, prefixes every datagram upstream (set once
	// the session is ready, under mu).
	ppHdr      []byte
	service    string
	created    time.Time
	lastActive atomic.Int64 // unix nanoseconds; refreshed by both directions

	mu    sync.RWMutex
	state int32
	fd    int
	queue [][]byte // datagrams waiting for resolution (bounded by udp_queue_length)
	use   *liveUse // set when ready; holds the lease and releases it (adopt.go)
	// ticket is the session's place in its service's client policy; released when it ends.
	ticket edgepolicy.Ticket

	dgToUp, dgToClient, bytesToUp, bytesToClient atomic.Uint64
	refused                                      atomic.Uint64
}

// clientIP is the client's address for the server, policies and events: without the zone a
// link-local client's address carries for the reply path.
func (s *udpSession) clientIP() netip.Addr { return s.client.Addr().WithZone("") }

func (s *udpSession) touch() { s.lastActive.Store(time.Now().UnixNano()) }

func (s *udpSession) ready() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state == stateReady
}

// fromClient forwards (or queues) slots [from, to) of b, datagrams from the client. b is the
// reader's batch: its datagrams are sent at once or copied, never kept.
func (s *udpSession) fromClient(b *datagramBatch, from, to int) {
	s.touch()
	s.mu.RLock()
	if s.state == stateReady {
		s.sendUpstreamLocked(b, from, to)
		s.mu.RUnlock()
		return
	}
	s.mu.RUnlock()

	s.mu.Lock()
	switch s.state {
	case stateResolving:
		for i := from; i < to; i++ {
			if len(s.queue) >= s.l.p.settings().UDPQueueLength {
				s.l.drops[dropQueueFull].Add(uint64(to - i))
				break
			}
			d := b.data(i)
			s.queue = append(s.queue, clone(d))
			s.countToUp(len(d))
		}
		s.mu.Unlock()
	case stateReady: // became ready between the two locks
		s.sendUpstreamLocked(b, from, to)
		s.mu.Unlock()
	default:
		s.mu.Unlock()
		s.l.drops[dropClosing].Add(uint64(to - from))
	}
}

// sendUpstreamLocked sends slots [from, to) of b on the session's socket, a single datagram
// with write(2) and several with one sendmmsg(2); s.mu is held (either way). With a PROXY
// header every datagram goes with writev(2), header and payload in one datagram.
func (s *udpSession) sendUpstreamLocked(b *datagramBatch, from, to int) {
	if to-from == 1 || s.ppHdr != nil {
		for i := from; i < to; i++ {
			d := b.data(i)
			s.afterWrite(len(d), s.writeUpstreamLocked(d))
		}
		return
	}
	for i := from; i < to; i++ {
		b.setConnected(i, int(b.msgs[i].n))
	}
	for i, refused := from, 0; i < to; {
		n, errno := b.send(uintptr(s.fd), i, to)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.ECONNREFUSED && refused < 3:
			// As in writeUpstreamLocked: a pending ICMP error was reported instead of sending;
			// reading it cleared it, so try again.
			s.refused.Add(1)
			refused++
			continue
		case errno != 0 || n == 0:
			s.l.drops[dropUpstreamWrite].Add(1)
			i++
			continue
		}
		var bytes uint64
		for k := i; k < i+n; k++ {
			bytes += uint64(b.iovs[k].Len)
		}
		s.countToUpN(uint64(n), bytes)
		i += n
	}
}

// writeUpstreamLocked sends one datagram on the session's socket; s.mu is held (either way).
func (s *udpSession) writeUpstreamLocked(b []byte) error {
	for range 3 {
		var err error
		if s.ppHdr != nil {
			// Header and payload in one datagram, as the specification requires.
			_, err = unix.Writev(s.fd, [][]byte{s.ppHdr, b})
			if err == nil {
				s.l.headersSent.Add(1)
			}
		} else {
			_, err = syscall.Write(s.fd, b)
		}
		switch err {
		case syscall.EINTR:
			continue
		case syscall.ECONNREFUSED:
			// A pending ICMP error from an earlier datagram was reported instead of sending this
			// one; reading it cleared it, so try again. The session lives on (Traefik #7000).
			s.refused.Add(1)
			continue
		}
		return err
	}
	return syscall.ECONNREFUSED
}

func (s *udpSession) afterWrite(n int, err error) {
	if err != nil {
		s.l.drops[dropUpstreamWrite].Add(1)
		return
	}
	s.countToUp(n)
}

func (s *udpSession) countToUp(n int) { s.countToUpN(1, uint64(n)) }

func (s *udpSession) countToUpN(datagrams, bytes uint64) {
	s.dgToUp.Add(datagrams)
	s.bytesToUp.Add(bytes)
	s.l.dgToUp.Add(datagrams)
	s.l.bytesToUp.Add(bytes)
}

func (s *udpSession) countToClient(n int) {
	s.dgToClient.Add(1)
	s.bytesToClient.Add(uint64(n))
	s.l.dgToClient.Add(1)
	s.l.bytesToClient.Add(uint64(n))
}

// resolve asks the server for an upstream, connects the session's own socket to it, flushes
// the queue in order and hands the socket to the reply poller. A session ended while it
// waited in the resolve queue is skipped.
func (s *udpSession) resolve(ctx context.Context) {
	l := s.l
	s.mu.RLock()
	closed := s.state == stateClosed
	s.mu.RUnlock()
	if closed {
		return
	}
	lease, err := l.p.resolveUse(ctx, s.clientIP(), s.service, UDP)
	if err != nil {
		l.p.events.Emit(events.Event{Kind: events.UpstreamLookupFailed, Severity: events.Warning,
			Message: fmt.Sprintf("no upstream for %q (udp)", s.service),
			Fields: map[string]string{"service": s.service, "client_ip": s.clientIP().String(),
				"protocol": "udp", "error": err.Error()}})
		s.fail(dropLookupFailed, "lookup failed: "+err.Error())
		return
	}
	fd, err := dialUDPFD(lease.Upstream)
	if err != nil {
		l.p.resolver.Release(lease)
		l.p.events.Emit(events.Event{Kind: events.UDPUpstreamConnectFailed, Severity: events.Warning,
			Message: fmt.Sprintf("cannot open a socket to %s for %q", lease.Upstream, s.service),
			Fields: map[string]string{"service": s.service, "upstream": lease.Upstream.String(),
				"client_ip": s.clientIP().String(), "error": err.Error()}})
		s.fail(dropUpstreamWrite, "upstream socket: "+err.Error())
		return
	}
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		syscall.Close(fd)
		l.p.resolver.Release(lease)
		return
	}
	s.fd = fd
	if l.p.sendProxyFor(l.slot.mapping.Load()) != proxyproto.None { // v2: udp has no v1
		local := s.local
		if !local.IsValid() {
			local = addrPortOf(l.conn.LocalAddr())
		}
		s.ppHdr = proxyproto.AppendV2(nil, proxyproto.Datagram, s.client, local)
	}
	s.use = l.p.startUse(s.clientIP(), s.service, UDP, lease, func() {
		l.remove(s)
		s.end("replica unhealthy")
	})
	s.state = stateReady
	for _, d := range s.queue {
		if err := s.writeUpstreamLocked(d); err != nil {
			l.drops[dropUpstreamWrite].Add(1)
		}
	}
	s.queue = nil
	err = l.poller.add(fd, s)
	s.mu.Unlock()
	if err != nil {
		l.remove(s)
		s.end("reply poller: " + err.Error())
		return
	}
	l.logger.Debug("udp session started", "client", s.client, "service", s.service, "upstream", lease.Upstream,
		"lease", lease.LeaseID)
}

// fail ends a session that never became ready; the next datagram from the client retries.
func (s *udpSession) fail(reason int, why string) {
	s.mu.Lock()
	queued := len(s.queue)
	s.mu.Unlock()
	s.l.drops[reason].Add(uint64(queued))
	s.l.remove(s)
	s.end(why)
}

// dropStale ends a queued session that waited past maxResolveWait: it never had a socket or a
// lease. No log line of its own (a flood makes thousands); the drops are counted and summed in
// the listener's admission log line.
func (s *udpSession) dropStale() {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	s.state = stateClosed
	queued := len(s.queue)
	s.queue = nil
	s.mu.Unlock()
	s.l.drops[dropResolveWait].Add(uint64(queued))
	s.l.remove(s)
	s.ticket.Release()
	s.l.active.Add(-1)
}

// end closes the session's socket, releases its lease and logs it, once.
func (s *udpSession) end(reason string) {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	s.state = stateClosed
	fd, use := s.fd, s.use
	s.fd, s.queue = -1, nil
	s.mu.Unlock()

	l := s.l
	upstream := ""
	if use != nil { // ready: it had a socket
		l.poller.remove(fd)
		syscall.Close(fd)
		l.p.endUse(use)
		upstream = use.upstream.String()
	}
	s.ticket.Release()
	l.active.Add(-1)
	l.logger.Info("udp session ended", "client", s.client, "service", s.service, "upstream", upstream,
		"reason", reason, "datagrams_to_upstream", s.dgToUp.Load(), "bytes_to_upstream", s.bytesToUp.Load(),
		"datagrams_to_client", s.dgToClient.Load(), "bytes_to_client", s.bytesToClient.Load(),
		"icmp_refused", s.refused.Load(), "duration", time.Since(s.created).Round(time.Millisecond))
}

// dialUDPFD opens a non-blocking UDP socket connected to up.
func dialUDPFD(up netip.AddrPort) (int, error) {
	var (
		family = syscall.AF_INET
		sa     syscall.Sockaddr
	)
	if a := up.Addr().Unmap(); a.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(up.Port()), Addr: a.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(up.Port()), Addr: a.As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Connect(fd, sa); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", up, err)
	}
	return fd, nil
}
