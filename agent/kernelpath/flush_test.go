package kernelpath

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/kernelpath/ct"
	"github.com/nullnet/nullnet/agent/kernelpath/nft"
	"github.com/vishvananda/netlink"
)

// TestFlushClientAndBoundedFollower: two clients of one net; flushing one client's flows
// leaves the other's; a follower whose consumer does not read drops (and counts) events beyond
// its buffer instead of growing.
func TestFlushClientAndBoundedFollower(t *testing.T) {
	tp := threeHosts(t)
	second := netip.MustParseAddr("10.201.1.3")
	ch := tp.client.Handle(t)
	eth0, err := ch.LinkByName("eth0")
	must(t, err)
	must(t, ch.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: second.AsSlice(), Mask: net.CIDRMask(24, 32)}}))

	serverTCP := tp.server.Listen(t, "tcp4", net.JoinHostPort(serverAddr.String(), "0"))
	serverPort := uint16(serverTCP.Addr().(*net.TCPAddr).Port)
	held := make(chan net.Conn, 16) // the server keeps the flows open until the test ends
	t.Cleanup(func() {
		for len(held) > 0 {
			_ = (<-held).Close()
		}
	})
	go func() {
		for {
			c, err := serverTCP.Accept()
			if err != nil {
				return
			}
			select {
			case held <- c:
			default:
				_ = c.Close()
			}
		}
	}()
	const listenPort = 7000 // the proxy namespace is the test's own
	tb, err := nft.New(nft.Config{Name: "nullnet_" + randomID(), NetNS: int(tp.proxy.NS)})
	must(t, err)
	_, err = tb.Start()
	must(t, err)
	t.Cleanup(func() { _ = tb.Stop() })
	target := netip.AddrPortFrom(serverAddr, serverPort)
	for _, c := range []netip.Addr{clientAddr, second} {
		must(t, tb.Add(nft.Entry{Key: nft.Key{Client: c, Proto: nft.TCP, Port: listenPort}, Target: target, Mark: netID}))
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const buffer = 2
	fol, err := ct.Follow(ctx, ct.FollowConfig{NetNS: int(tp.proxy.NS), Want: func(m uint32) bool { return m == netID }, Buffer: buffer})
	must(t, err)

	listen := netip.AddrPortFrom(proxyToClient, listenPort).String()
	const perClient = 4
	for _, c := range []netip.Addr{clientAddr, second} {
		for range perClient {
			conn, err := tp.client.Dial(ctx, c.String(), listen)
			must(t, err)
			t.Cleanup(func() { _ = conn.Close() })
		}
	}
	cc, err := ct.Open(ct.Config{NetNS: int(tp.proxy.NS)})
	must(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	flows, err := cc.Marked(netID)
	must(t, err)
	if len(flows) != 2*perClient {
		t.Fatalf("%d flows with our mark, want %d", len(flows), 2*perClient)
	}

	must(t, tb.Delete(nft.Key{Client: clientAddr, Proto: nft.TCP, Port: listenPort}))
	n, err := cc.FlushClient(netID, 6, clientAddr, listenPort)
	must(t, err)
	if n != perClient {
		t.Fatalf("FlushClient deleted %d flows, want %d", n, perClient)
	}
	flows, err = cc.Marked(netID)
	must(t, err)
	if len(flows) != perClient {
		t.Fatalf("%d flows left, want the other client's %d", len(flows), perClient)
	}
	for _, f := range flows {
		if f.Client.Addr() != second {
			t.Fatalf("flow of %s survived its client's flush", f.Client)
		}
	}

	// 8 new + 4 destroy events were offered to a buffer of 2 nobody read.
	deadline := time.Now().Add(5 * time.Second)
	for fol.Dropped() < 2*perClient+perClient-buffer && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := fol.Dropped(), uint64(2*perClient+perClient-buffer); got != want {
		t.Fatalf("follower dropped %d events, want %d", got, want)
	}
	if got := len(fol.Events()); got != buffer {
		t.Fatalf("follower holds %d events, want its buffer of %d", got, buffer)
	}
	cancel()
	select {
	case <-fol.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("follower did not stop after its context ended")
	}
	if err := fol.Err(); err != nil {
		t.Fatalf("follower stopped with %v, want nil after cancel", err)
	}
}
