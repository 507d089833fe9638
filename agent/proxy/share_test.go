package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/config"
)

func TestSharedResolver(t *testing.T) {
	client := netip.MustParseAddr("198.51.100.7")
	up := netip.MustParseAddrPort("10.0.3.42:6379")
	ctx := context.Background()
	newShared := func(linger time.Duration) (*sharedResolver, *testResolver) {
		inner := newTestResolver()
		inner.set("redis", up)
		return newSharedResolver(inner, linger, hclog.NewNullLogger()), inner
	}

	t.Run("sequential uses take one lease, released after the linger", func(t *testing.T) {
		r, inner := newShared(200 * time.Millisecond)
		for i := 0; i < 100; i++ {
			l, err := r.Resolve(ctx, client, "redis", TCP)
			if err != nil || l.Upstream != up {
				t.Fatalf("use %d: %+v, %v", i, l, err)
			}
			r.Release(l)
		}
		if issued, released := inner.counts(); issued != 1 || released != 0 {
			t.Fatalf("issued %d released %d; want 1 lease still held during the linger", issued, released)
		}
		waitFor(t, 2*time.Second, "the lease released after the linger", func() bool {
			_, released := inner.counts()
			return released == 1
		})
		inner.checkNoDoubleRelease(t)
	})

	t.Run("use_linger 0 turns sharing off, and a reload turns it back on", func(t *testing.T) {
		r, inner := newShared(0)
		for i := 0; i < 3; i++ {
			l, err := r.Resolve(ctx, client, "redis", TCP)
			if err != nil || l.Reused {
				t.Fatalf("use %d with sharing off: %+v, %v", i, l, err)
			}
			r.Release(l)
		}
		if issued, released := inner.counts(); issued != 3 || released != 3 {
			t.Fatalf("sharing off: issued %d released %d; want 3 and 3 (a lease per use, released at once)", issued, released)
		}
		r.setLinger(time.Hour)
		a, _ := r.Resolve(ctx, client, "redis", TCP)
		b, _ := r.Resolve(ctx, client, "redis", TCP)
		if !b.Reused {
			t.Fatalf("after turning sharing on the second use did not join the first: %+v", b)
		}
		r.setLinger(0) // off again: the held share ends with its last use, without a linger
		r.Release(a)
		r.Release(b)
		if issued, released := inner.counts(); issued != 4 || released != 4 {
			t.Fatalf("issued %d released %d; want the share released with its last use", issued, released)
		}
		inner.checkNoDoubleRelease(t)
	})

	t.Run("a use during the linger revives the share", func(t *testing.T) {
		r, inner := newShared(300 * time.Millisecond)
		l, _ := r.Resolve(ctx, client, "redis", TCP)
		r.Release(l)
		time.Sleep(150 * time.Millisecond)
		l, _ = r.Resolve(ctx, client, "redis", TCP)
		time.Sleep(300 * time.Millisecond) // past the first linger: the revived share holds
		if issued, released := inner.counts(); issued != 1 || released != 0 {
			t.Fatalf("issued %d released %d; want the revived lease held", issued, released)
		}
		r.Release(l)
		waitFor(t, 2*time.Second, "release", func() bool { _, rel := inner.counts(); return rel == 1 })
	})

	t.Run("concurrent first uses make one call and share its result", func(t *testing.T) {
		r, inner := newShared(time.Second)
		inner.slow(client, 200*time.Millisecond)
		var wg sync.WaitGroup
		leases := make(chan Lease, 50)
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := r.Resolve(ctx, client, "redis", UDP)
				if err != nil {
					t.Error(err)
					return
				}
				leases <- l
			}()
		}
		wg.Wait()
		close(leases)
		reused := 0
		for l := range leases {
			if l.Reused {
				reused++
			}
			r.Release(l)
		}
		if inner.resolves != 1 || reused != 49 {
			t.Fatalf("%d server calls, %d joined; want 1 and 49", inner.resolves, reused)
		}
	})

	t.Run("an error is returned, not kept", func(t *testing.T) {
		r, inner := newShared(time.Second)
		inner.fail("redis", fmt.Errorf("%w: none", ErrNoReplica))
		if _, err := r.Resolve(ctx, client, "redis", TCP); !errors.Is(err, ErrNoReplica) {
			t.Fatalf("err = %v", err)
		}
		inner.fail("redis", nil)
		inner.mu.Lock()
		delete(inner.errs, "redis")
		inner.mu.Unlock()
		l, err := r.Resolve(ctx, client, "redis", TCP)
		if err != nil || inner.resolves != 2 {
			t.Fatalf("after the error: %v, %d calls", err, inner.resolves)
		}
		r.Release(l)
	})

	t.Run("a forgotten share takes no new uses and goes with its last use", func(t *testing.T) {
		r, inner := newShared(time.Hour)
		a, _ := r.Resolve(ctx, client, "redis", TCP)
		r.Forget(a)
		b, _ := r.Resolve(ctx, client, "redis", TCP)
		if a.LeaseID == b.LeaseID || inner.resolves != 2 {
			t.Fatalf("after Forget the next use reused %q (%d calls)", b.LeaseID, inner.resolves)
		}
		r.Release(a) // last use of the forgotten share: released at once, no linger
		if _, released := inner.counts(); released != 1 {
			t.Fatalf("forgotten share not released with its last use")
		}
		r.Release(b)
		r.Close() // shutdown releases lingering shares at once
		if issued, released := inner.counts(); issued != 2 || released != 2 {
			t.Fatalf("issued %d released %d after Close", issued, released)
		}
		inner.checkNoDoubleRelease(t)
	})

	t.Run("per protocol and per client", func(t *testing.T) {
		r, inner := newShared(time.Hour)
		for _, c := range []string{"198.51.100.7", "198.51.100.8"} {
			for _, p := range []Protocol{TCP, UDP} {
				if _, err := r.Resolve(ctx, netip.MustParseAddr(c), "redis", p); err != nil {
					t.Fatal(err)
				}
			}
		}
		if inner.resolves != 4 {
			t.Fatalf("%d calls, want 4", inner.resolves)
		}
	})
}

// TestUseSharingWithServer: with the real server, concurrent and sequential connections of one
// client hold one use on the server, which goes after the linger.
func TestUseSharingWithServer(t *testing.T) {
	e := startServer(t)
	echoLn := tcpUpstream(t, echo)
	port := freePort(t)
	e.writeStack(fmt.Sprintf(`
  service "echo" {
    protocol = "tcp"
    listen_port = %d
    timeout = 0
  }
`, port))
	e.replica("echo-1", "echo", echoLn.Addr().(*net.TCPAddr).Port)
	tp := startProxy(t, nil, func(a *config.Config, c *Config) {
		a.NodeName = "nnpx-proxy"
		c.Conn = e.conn
		a.Proxy.UseLinger = 500 * time.Millisecond
	})
	tp.waitListening(t, TCP, port)

	first := relayedConn(t, port)
	var open []net.Conn
	for i := 0; i < 5; i++ {
		c := dialProxy(t, port)
		roundTripTCP(t, c, "hello\n")
		open = append(open, c)
	}
	if u := e.uses()["echo"]; u != 1 {
		t.Fatalf("server sees %d uses for 6 open connections of one client; want 1 (shared)", u)
	}
	for i := 0; i < 30; i++ { // short connections ride on the share
		c := dialProxy(t, port)
		roundTripTCP(t, c, "ping\n")
		c.Close()
	}
	first.Close()
	for _, c := range open {
		c.Close()
	}
	if u := e.uses()["echo"]; u != 1 {
		t.Fatalf("uses right after the last close = %d; want 1 (the linger)", u)
	}
	waitFor(t, 5*time.Second, "the shared use released after the linger", func() bool { return e.uses()["echo"] == 0 })
}
