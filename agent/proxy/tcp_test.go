package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"golang.org/x/sys/unix"
)

// tcpUpstream runs a TCP server on 127.0.0.1 whose handler is given each connection.
func tcpUpstream(t *testing.T, handle func(c *net.TCPConn)) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); handle(c.(*net.TCPConn)) }()
		}
	}()
	return ln.(*net.TCPListener)
}

// hashReply reads until EOF, then answers with the SHA-256 of what it read (needs half-close).
func hashReply(c *net.TCPConn) {
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		return
	}
	_, _ = c.Write(h.Sum(nil))
}

func echo(c *net.TCPConn) { _, _ = io.Copy(c, c) }

func dialProxy(t *testing.T, port uint16) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatalf("dial proxy port %d: %v", port, err)
	}
	return c.(*net.TCPConn)
}

// TestTCPRelayHalfCloseAndByteExact sends 1 GiB through the relay, half-closes, and reads the
// upstream's digest of everything it received: the transfer is byte-exact and the answer
// written after the client's FIN reaches the client.
func TestTCPRelayHalfCloseAndByteExact(t *testing.T) {
	res := newTestResolver()
	up := tcpUpstream(t, hashReply)
	res.set("sink", addrOf(t, up.Addr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: TCP, Port: port, Service: "sink"})
	tp.waitListening(t, TCP, port)

	for _, size := range []int64{0, 1, 1 << 30} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := dialProxy(t, port)
			defer c.Close()
			want := sha256.New()
			src := io.TeeReader(io.LimitReader(newRandReader(uint64(size)), size), want)
			n, err := io.Copy(c, src)
			if err != nil || n != size {
				t.Fatalf("sent %d of %d bytes: %v", n, size, err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatalf("half-close: %v", err)
			}
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the answer after half-close: %v", err)
			}
			if !bytes.Equal(got, want.Sum(nil)) {
				t.Fatalf("upstream digest %x, want %x (%d bytes sent)", got, want.Sum(nil), size)
			}
		})
	}
	waitFor(t, 10*time.Second, "every lease released", func() bool {
		issued, released := res.counts()
		return issued == 3 && released == 3
	})
	res.checkNoDoubleRelease(t)
}

// newRandReader is a fast deterministic byte source.
func newRandReader(seed uint64) io.Reader { return &randReader{r: rand.NewPCG(seed, 7)} }

type randReader struct{ r *rand.PCG }

func (r *randReader) Read(p []byte) (int, error) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := r.r.Uint64()
		for j := range 8 {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(p) &^ 7; i < len(p); i++ {
		p[i] = byte(r.r.Uint64())
	}
	return len(p), nil
}

// TestTCPRelayConcurrent opens 500 connections at once, each echoing its own payload.
func TestTCPRelayConcurrent(t *testing.T) {
	res := newTestResolver()
	up := tcpUpstream(t, echo)
	res.set("echo", addrOf(t, up.Addr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: TCP, Port: port, Service: "echo"})
	tp.waitListening(t, TCP, port)

	const n = 500
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		conns[i] = dialProxy(t, port)
	}
	var wg, echoed sync.WaitGroup
	hold := make(chan struct{})
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		echoed.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			echoedOnce := sync.OnceFunc(echoed.Done)
			defer echoedOnce()
			msg := bytes.Repeat([]byte(fmt.Sprintf("conn-%04d;", i)), 100)
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
				return
			}
			if !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("conn %d: echoed bytes differ", i)
			}
			echoedOnce()
			<-hold // keep every connection open until all 500 are relayed at once
		}()
	}
	echoed.Wait()
	if l, _ := tp.listener(TCP, port); l.Active != n {
		t.Errorf("%d connections relayed at once, want %d", l.Active, n)
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, 30*time.Second, "every lease released", func() bool {
		issued, released := res.counts()
		return issued == n && released == n
	})
	res.checkNoDoubleRelease(t)
}

// TestTCPRelayFailures: unknown service and refused upstream end the client connection, emit
// events and never leak a lease.
func TestTCPRelayFailures(t *testing.T) {
	res := newTestResolver()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := addrOf(t, dead.Addr())
	dead.Close()
	res.set("refused", deadAddr)
	tp := startProxy(t, res, nil)
	p1, p2 := freePort(t), freePort(t)
	tp.apply(1, Mapping{Protocol: TCP, Port: p1, Service: "nope"}, Mapping{Protocol: TCP, Port: p2, Service: "refused"})
	tp.waitListening(t, TCP, p1)
	tp.waitListening(t, TCP, p2)

	for _, port := range []uint16{p1, p2} {
		// The reset may even beat connect(2) on loopback: a failed dial is the same answer.
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
		if err != nil {
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("port %d: dial: %v", port, err)
			}
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("port %d: want the connection ended, got %v", port, err)
		}
		c.Close()
	}
	waitFor(t, 10*time.Second, "events", func() bool {
		return tp.hasEvent(events.UpstreamLookupFailed) && tp.hasEvent(events.TCPUpstreamConnectFailed)
	})
	waitFor(t, 10*time.Second, "lease of the refused dial released", func() bool {
		issued, released := res.counts()
		return issued == 1 && released == 1
	})
}

// TestTCPMappingRemovedKeepsConnections: removing a mapping closes the port for new clients but
// an established connection keeps relaying; renaming a mapping does not rebind.
func TestTCPMappingRemovedKeepsConnections(t *testing.T) {
	res := newTestResolver()
	up := tcpUpstream(t, echo)
	res.set("echo", addrOf(t, up.Addr()))
	res.set("echo2", addrOf(t, up.Addr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: TCP, Port: port, Service: "echo"})
	tp.waitListening(t, TCP, port)
	before, _ := tp.listener(TCP, port)

	c := dialProxy(t, port)
	defer c.Close()
	roundTrip := func(msg string) {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, got, err)
		}
	}
	roundTrip("one")

	// Rename in place: same listener (same state start time), new service for new conns.
	tp.apply(2, Mapping{Protocol: TCP, Port: port, Service: "echo2", IdleTimeout: time.Minute})
	after, _ := tp.listener(TCP, port)
	if after.Service != "echo2" || !after.Since.Equal(before.Since) || after.State != "listening" {
		t.Fatalf("rename should update in place: before %+v after %+v", before, after)
	}

	tp.apply(3)
	waitFor(t, 10*time.Second, "port closed", func() bool {
		c2, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c2.Close()
			return false
		}
		return true
	})
	roundTrip("still alive after the mapping went away")
	c.Close()
	// Every lease is released: the long-lived connection's, and those of any probe connection
	// that was accepted just before the listener closed.
	waitFor(t, 10*time.Second, "leases released", func() bool {
		issued, released := res.counts()
		return issued >= 1 && released == issued
	})
}

// TestBindConflictRetried: a port held by another process is reported (event, status) and
// taken once the other process lets go; other listeners are unaffected.
func TestBindConflictRetried(t *testing.T) {
	res := newTestResolver()
	up := tcpUpstream(t, echo)
	res.set("echo", addrOf(t, up.Addr()))
	tp := startProxy(t, res, nil)

	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(string(proto), func(t *testing.T) {
			port, other := freePort(t), freePort(t)
			var holder io.Closer
			var err error
			if proto == TCP {
				holder, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			} else {
				holder, err = net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			tp.apply(10, Mapping{Protocol: proto, Port: port, Service: "echo"}, Mapping{Protocol: proto, Port: other, Service: "echo"})
			tp.waitListening(t, proto, other)
			kind := events.TCPListenerBindFailed
			if proto == UDP {
				kind = events.UDPListenerBindFailed
			}
			waitFor(t, 10*time.Second, "bind failure reported", func() bool {
				l, _ := tp.listener(proto, port)
				return l.State == "bind_failed" && l.Error != "" && l.Failures >= 2 && tp.hasEvent(kind)
			})
			holder.Close()
			tp.waitListening(t, proto, port)
			tp.apply(11)
		})
	}
}

// Keepalive is set once on the listening socket; a connection it accepts carries it (Linux
// copies the options), so the relay spends no setsockopt per connection on it.
func TestTCPAcceptedConnectionsInheritKeepalive(t *testing.T) {
	ln, err := keepAliveListenConfig.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rc, err := a.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, keepAliveIdle},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, keepAliveInterval},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
	} {
		var v int
		var gerr error
		if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil || gerr != nil {
			t.Fatalf("%s: %v %v", o.name, err, gerr)
		}
		if v != o.want {
			t.Errorf("accepted connection %s = %d, want %d (inherited from the listener)", o.name, v, o.want)
		}
	}
}
