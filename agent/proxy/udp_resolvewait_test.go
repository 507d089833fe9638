package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestUDPResolveWaitBound: new sessions that waited in the resolve queue past maxResolveWait
// are dropped when their turn comes, without a call to the resolver, so a client arriving after
// a flood does not wait behind the flood's backlog. 64 sessions occupy every resolver for 1 s;
// 10 more wait behind them past the (shortened) bound and are dropped as resolve_wait; a client
// arriving afterwards is served.
func TestUDPResolveWaitBound(t *testing.T) {
	defer func(d time.Duration) { maxResolveWait = d }(maxResolveWait)
	maxResolveWait = 300 * time.Millisecond

	res := newTestResolver()
	up := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("dns", addrOf(t, up.LocalAddr()))
	res.slow(netip.MustParseAddr("127.0.0.1"), time.Second)
	port := freePort(t)
	tp := startProxy(t, res, nil)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "dns", IdleTimeout: time.Minute})
	tp.waitListening(t, UDP, port)
	l := tp.udpListener(port)
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}

	const stale = 10
	for i := range maxUDPResolvers + stale {
		c, err := net.DialUDP("udp4", nil, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the queued sessions dropped", func() bool {
		return l.drops[dropResolveWait].Load() == stale
	})
	res.slow(netip.MustParseAddr("127.0.0.1"), 0)
	waitFor(t, 10*time.Second, "the first sessions resolved", func() bool {
		issued, _ := res.counts()
		return issued == maxUDPResolvers
	})
	if got := l.active.Load(); got != maxUDPResolvers {
		t.Errorf("%d sessions, want %d (the stale ones removed)", got, maxUDPResolvers)
	}
	c, err := net.DialUDP("udp4", nil, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := exchange(c, []byte("after"), 10); err != nil {
		t.Fatalf("a client after the backlog: %v", err)
	}
	if issued, _ := res.counts(); issued != maxUDPResolvers+1 {
		t.Errorf("%d resolutions, want %d: a dropped session must not call the server", issued, maxUDPResolvers+1)
	}
}
