package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// udpUpstream runs a UDP server on addr (127.0.0.1:0 for any port). reply is called for each
// datagram with a send function.
func udpUpstream(t *testing.T, addr string, reply func(b []byte, send func([]byte))) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := pc.(*net.UDPConn)
	var wg sync.WaitGroup
	t.Cleanup(func() { c.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			b := clone(buf[:n])
			reply(b, func(p []byte) { _, _ = c.WriteToUDPAddrPort(p, from) })
		}
	}()
	return c
}

func udpEcho(b []byte, send func([]byte)) { send(b) }

// udpClient is a connected client socket: it only receives datagrams whose source is the
// address it sent to, so every reply it reads came from the proxy's listening port.
func udpClient(t *testing.T, local string, port uint16) *net.UDPConn {
	t.Helper()
	var laddr *net.UDPAddr
	if local != "" {
		laddr = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local))
	}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg until the echo arrives (UDP may drop under load; the test checks content).
func exchange(c *net.UDPConn, msg []byte, attempts int) error {
	buf := make([]byte, maxDatagram)
	for range attempts {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if !bytes.Equal(buf[:n], msg) {
			return fmt.Errorf("got %d bytes %.20q, want %d bytes %.20q", n, buf[:n], len(msg), msg)
		}
		return nil
	}
	return fmt.Errorf("no echo after %d attempts", attempts)
}

func (tp *testProxy) udpListener(port uint16) *udpListener {
	tp.mu.Lock()
	s := tp.slots[listenerKey{UDP, port}]
	tp.mu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, _ := s.srv.(*udpListener)
	return l
}

// TestUDP200Clients: 200 client addresses at once, each with its own session; replies come
// from the listen port; a 65000-byte datagram is relayed whole; closing the listener ends and
// releases every session.
func TestUDP200Clients(t *testing.T) {
	res := newTestResolver()
	up := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("echo", addrOf(t, up.LocalAddr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "echo", IdleTimeout: time.Minute})
	tp.waitListening(t, UDP, port)

	const n = 200
	clients := make([]*net.UDPConn, n)
	for i := range clients {
		clients[i] = udpClient(t, "", port)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte(fmt.Sprintf("client %d says hello", i))
			if i == 0 {
				msg = bytes.Repeat([]byte{'x'}, 65000)
			}
			if err := exchange(c, msg, 5); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if l, _ := tp.listener(UDP, port); l.Active != n {
		t.Errorf("active sessions %d, want %d", l.Active, n)
	}
	if issued, released := res.counts(); issued != n || released != 0 {
		t.Errorf("leases issued %d released %d, want %d and 0", issued, released, n)
	}
	tp.apply(2)
	waitFor(t, 20*time.Second, "every session released after the listener closed", func() bool {
		_, released := res.counts()
		return released == n
	})
	res.checkNoDoubleRelease(t)
}

// TestUDPIdleSweep: replies alone keep a session alive (both directions count); once nothing
// moves for the mapping's timeout the session is swept and its lease released.
func TestUDPIdleSweep(t *testing.T) {
	res := newTestResolver()
	// The upstream answers the first datagram with 8 datagrams 250 ms apart (2 s in all).
	up := udpUpstream(t, "127.0.0.1:0", func(b []byte, send func([]byte)) {
		go func() {
			for i := range 8 {
				send([]byte(fmt.Sprintf("tick %d", i)))
				time.Sleep(250 * time.Millisecond)
			}
		}()
	})
	res.set("ticker", addrOf(t, up.LocalAddr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "ticker", IdleTimeout: time.Second})
	tp.waitListening(t, UDP, port)

	c := udpClient(t, "", port)
	if _, err := c.Write([]byte("start")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for i := range 8 {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("tick %d: %v (session swept while the upstream was still sending?)", i, err)
		}
		if want := fmt.Sprintf("tick %d", i); string(buf[:n]) != want {
			t.Fatalf("got %q, want %q", buf[:n], want)
		}
	}
	if _, released := res.counts(); released != 0 {
		t.Fatalf("session released while active")
	}
	waitFor(t, 20*time.Second, "idle session swept and released", func() bool {
		issued, released := res.counts()
		l, _ := tp.listener(UDP, port)
		return issued == 1 && released == 1 && l.Active == 0
	})
	// A new datagram from the same address starts a new session.
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a second session", func() bool {
		issued, _ := res.counts()
		return issued == 2
	})
}

// TestUDPSlowResolution: while one client's resolution hangs, another client's datagrams flow;
// the slow client's datagrams wait in a bounded queue and go out in order once it resolves.
func TestUDPSlowResolution(t *testing.T) {
	res := newTestResolver()
	up := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("echo", addrOf(t, up.LocalAddr()))
	res.slow(netip.MustParseAddr("127.0.0.2"), 4*time.Second)
	tp := startProxy(t, res, func(a *config.Config, _ *Config) { a.Proxy.UDPQueueLength = 3 })
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "echo"})
	tp.waitListening(t, UDP, port)

	slow := udpClient(t, "127.0.0.2:0", port)
	for i := range 5 {
		if _, err := slow.Write([]byte(fmt.Sprintf("slow %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	fast := udpClient(t, "127.0.0.1:0", port)
	start := time.Now()
	for i := range 20 {
		if err := exchange(fast, []byte(fmt.Sprintf("fast %d", i)), 3); err != nil {
			t.Fatalf("fast client: %v", err)
		}
	}
	if issued, _ := res.counts(); issued != 1 {
		t.Fatalf("fast client done while slow one resolved: issued %d leases, want 1 (fast took %s)", issued, time.Since(start))
	}
	buf := make([]byte, 100)
	for i := range 3 {
		_ = slow.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := slow.Read(buf)
		if err != nil {
			t.Fatalf("slow client reply %d: %v", i, err)
		}
		if want := fmt.Sprintf("slow %d", i); string(buf[:n]) != want {
			t.Fatalf("slow client got %q, want %q (queue order)", buf[:n], want)
		}
	}
	if got := tp.udpListener(port).drops[dropQueueFull].Load(); got != 2 {
		t.Errorf("queue_full drops = %d, want 2", got)
	}
}

// TestUDPICMPRefusedKeepsSession: an upstream that is not listening yet answers with ICMP port
// unreachable; the session survives and relays once the upstream starts.
func TestUDPICMPRefusedKeepsSession(t *testing.T) {
	res := newTestResolver()
	upPort := freePort(t)
	upAddr := fmt.Sprintf("127.0.0.1:%d", upPort)
	res.set("late", netip.MustParseAddrPort(upAddr))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "late"})
	tp.waitListening(t, UDP, port)

	c := udpClient(t, "", port)
	for range 3 {
		if _, err := c.Write([]byte("anyone?")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	udpUpstream(t, upAddr, udpEcho)
	if err := exchange(c, []byte("now?"), 5); err != nil {
		t.Fatalf("after the upstream started: %v", err)
	}
	if issued, released := res.counts(); issued != 1 || released != 0 {
		t.Fatalf("leases issued %d released %d: the session should have survived the ICMP errors", issued, released)
	}
}

// TestUDPSessionLimit: beyond udp_max_sessions new client addresses are dropped and counted.
func TestUDPSessionLimit(t *testing.T) {
	res := newTestResolver()
	up := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("echo", addrOf(t, up.LocalAddr()))
	tp := startProxy(t, res, func(a *config.Config, _ *Config) { a.Proxy.UDPMaxSessions = 2 })
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "echo"})
	tp.waitListening(t, UDP, port)
	for i := range 2 {
		if err := exchange(udpClient(t, "", port), []byte(fmt.Sprint(i)), 3); err != nil {
			t.Fatal(err)
		}
	}
	third := udpClient(t, "", port)
	if err := exchange(third, []byte("3"), 1); err == nil {
		t.Fatal("third client got a session beyond the limit")
	}
	if got := tp.udpListener(port).drops[dropSessionLimit].Load(); got == 0 {
		t.Error("session_limit drop not counted")
	}
	if !tp.hasEvent(events.UDPSessionLimitReached) {
		t.Error("no udp_session_limit_reached event")
	}
}

// TestUDPQuickReadd: removing a mapping and adding it back at once rebinds cleanly (the old
// socket is closed before the new bind), unlike upstream where reply pumps kept it bound.
func TestUDPQuickReadd(t *testing.T) {
	res := newTestResolver()
	up := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("echo", addrOf(t, up.LocalAddr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	m := Mapping{Protocol: UDP, Port: port, Service: "echo"}
	for v := range uint64(5) {
		tp.apply(2*v+1, m)
		tp.waitListening(t, UDP, port)
		if err := exchange(udpClient(t, "", port), []byte("hi"), 3); err != nil {
			t.Fatal(err)
		}
		tp.apply(2*v + 2)
	}
	tp.apply(100, m)
	tp.waitListening(t, UDP, port)
	if tp.hasEvent(events.UDPListenerBindFailed) {
		t.Error("a re-add raced the old socket's close")
	}
	waitFor(t, 10*time.Second, "sessions of removed listeners released", func() bool {
		issued, released := res.counts()
		return issued == 5 && released == 5
	})
}
