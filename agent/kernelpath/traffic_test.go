package kernelpath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/kernelpath/ct"
	"github.com/nullnet/nullnet/agent/kernelpath/nft"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/vishvananda/netlink"
)

// The three namespaces' addresses; each namespace is the test's own, so fixed subnets do not
// collide with anything.
var (
	clientAddr     = netip.MustParseAddr("10.201.1.2")
	proxyToClient  = netip.MustParseAddr("10.201.1.1")
	proxyToServer  = netip.MustParseAddr("10.201.2.1")
	serverAddr     = netip.MustParseAddr("10.201.2.2")
	netID          = uint32(0x00c0ffee) // asymmetric bytes: a byte-order slip shows
	followedBuffer = 64
)

type topology struct {
	client, proxy, server *overlaytest.Host
}

// threeHosts builds client -- proxy -- server over two veth pairs. Only the proxy forwards.
func threeHosts(t *testing.T) topology {
	t.Helper()
	id := randomID()
	mk := func(role string) *overlaytest.Host {
		name := fmt.Sprintf("nnkp-%s-%s", id, role)
		return &overlaytest.Host{Name: name, NS: overlaytest.Namespace(t, name)}
	}
	tp := topology{client: mk("c"), proxy: mk("p"), server: mk("s")}
	ph := tp.proxy.Handle(t)
	link := func(h *netlink.Handle, name string, addr netip.Addr) {
		t.Helper()
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}})
		}
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err == nil {
			var lo netlink.Link
			if lo, err = h.LinkByName("lo"); err == nil {
				err = h.LinkSetUp(lo)
			}
		}
		if err != nil {
			t.Fatalf("%s %s: %v", name, addr, err)
		}
	}
	for _, side := range []struct {
		dev      string
		peer     *overlaytest.Host
		own, far netip.Addr
	}{{"toc", tp.client, proxyToClient, clientAddr}, {"tos", tp.server, proxyToServer, serverAddr}} {
		veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "eth0", PeerNamespace: netlink.NsFd(int(side.peer.NS))}
		veth.Name = side.dev
		if err := ph.LinkAdd(veth); err != nil {
			t.Fatalf("veth %s: %v", side.dev, err)
		}
		link(ph, side.dev, side.own)
		peer := side.peer.Handle(t)
		link(peer, "eth0", side.far)
		if err := peer.RouteAdd(&netlink.Route{Gw: side.own.AsSlice()}); err != nil {
			t.Fatalf("%s: default route via %s: %v", side.peer.Name, side.own, err)
		}
	}
	if err := tp.proxy.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	return tp
}

// TestKernelPathCarriesTraffic: a client's TCP connection and UDP datagrams to the proxy's
// listen ports are DNATed by the table's map straight to the server, which sees the client's
// own address; replies come back un-NATed through conntrack; the flows carry the net id as
// their mark, are found and flushed by it; after Delete and the flush, the next connection and
// datagram reach the proxy's own sockets again.
func TestKernelPathCarriesTraffic(t *testing.T) {
	tp := threeHosts(t)

	// The proxy's user-space sockets on its listen ports: first contact lands here.
	proxyTCP := tp.proxy.Listen(t, "tcp4", net.JoinHostPort(proxyToClient.String(), "0")).(*net.TCPListener)
	listenPort := uint16(proxyTCP.Addr().(*net.TCPAddr).Port)
	var proxyUDP *net.UDPConn
	must(t, tp.proxy.Do(func() (err error) {
		proxyUDP, err = net.ListenUDP("udp4", &net.UDPAddr{IP: proxyToClient.AsSlice(), Port: int(listenPort)})
		return err
	}))
	t.Cleanup(func() { _ = proxyUDP.Close() })

	serverTCP := tp.server.Listen(t, "tcp4", net.JoinHostPort(serverAddr.String(), "0"))
	serverPort := uint16(serverTCP.Addr().(*net.TCPAddr).Port)
	var serverUDP *net.UDPConn
	must(t, tp.server.Do(func() (err error) {
		serverUDP, err = net.ListenUDP("udp4", &net.UDPAddr{IP: serverAddr.AsSlice(), Port: int(serverPort)})
		return err
	}))
	t.Cleanup(func() { _ = serverUDP.Close() })

	// Per-flow byte counters (per namespace): the future per-session accounting reads them.
	must(t, tp.proxy.Sysctl("net/netfilter/nf_conntrack_acct", "1"))
	tb, err := nft.New(nft.Config{Name: "nullnet_" + randomID(), NetNS: int(tp.proxy.NS)})
	must(t, err)
	_, err = tb.Start()
	must(t, err)
	t.Cleanup(func() { _ = tb.Stop() })
	target := netip.AddrPortFrom(serverAddr, serverPort)
	entries := []nft.Entry{
		{Key: nft.Key{Client: clientAddr, Proto: nft.TCP, Port: listenPort}, Target: target, Mark: netID},
		{Key: nft.Key{Client: clientAddr, Proto: nft.UDP, Port: listenPort}, Target: target, Mark: netID},
	}
	must(t, tb.Add(entries...))

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	fol, err := ct.Follow(ctx, ct.FollowConfig{NetNS: int(tp.proxy.NS), Want: func(m uint32) bool { return m == netID }, Buffer: followedBuffer})
	must(t, err)
	t.Cleanup(func() { cancel(); <-fol.Done() })

	// TCP: the server answers with the address it sees.
	go func() {
		for {
			c, err := serverTCP.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = fmt.Fprintf(c, "%s %s\n", buf, c.RemoteAddr())
				}
			}()
		}
	}()
	listen := net.JoinHostPort(proxyToClient.String(), fmt.Sprint(listenPort))
	conn, err := tp.client.Dial(ctx, "", listen)
	must(t, err)
	must(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Write([]byte("ping"))
	must(t, err)
	line := make([]byte, 64)
	n, err := conn.Read(line)
	must(t, err)
	clientPort := conn.LocalAddr().(*net.TCPAddr).Port
	wantSeen := fmt.Sprintf("ping %s:%d\n", clientAddr, clientPort)
	if got := string(line[:n]); got != wantSeen {
		t.Fatalf("server answered %q, want %q (the client's own address, no SNAT)", got, wantSeen)
	}
	t.Logf("TCP through the kernel path: server saw %s", line[:n-1])
	_ = conn.Close()
	requireNoAccept(t, proxyTCP)

	// UDP: a connected client socket only takes replies from the listen address, so the pong
	// arriving proves conntrack un-NATed it.
	var udpc *net.UDPConn
	must(t, tp.client.Do(func() (err error) {
		udpc, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(listen)))
		return err
	}))
	t.Cleanup(func() { _ = udpc.Close() })
	must(t, udpc.SetDeadline(time.Now().Add(5*time.Second)))
	must(t, serverUDP.SetDeadline(time.Now().Add(5*time.Second)))
	for i := range 3 {
		_, err = udpc.Write([]byte(fmt.Sprintf("dgram %d", i)))
		must(t, err)
		buf := make([]byte, 64)
		n, from, err := serverUDP.ReadFromUDPAddrPort(buf)
		must(t, err)
		if from.Addr() != clientAddr || int(from.Port()) != udpc.LocalAddr().(*net.UDPAddr).Port {
			t.Fatalf("server got datagram from %s, want the client's own %s", from, udpc.LocalAddr())
		}
		_, err = serverUDP.WriteToUDPAddrPort(append([]byte("re "), buf[:n]...), from)
		must(t, err)
		n, err = udpc.Read(buf)
		must(t, err)
		if want := fmt.Sprintf("re dgram %d", i); string(buf[:n]) != want {
			t.Fatalf("client got %q, want %q", buf[:n], want)
		}
	}
	requireNoDatagram(t, proxyUDP)

	// conntrack: the flows carry the net id.
	cc, err := ct.Open(ct.Config{NetNS: int(tp.proxy.NS)})
	must(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	flows, err := cc.Marked(netID)
	must(t, err)
	var sawTCP, sawUDP bool
	for _, f := range flows {
		if f.Client.Addr() != clientAddr || f.Listen.Addr() != proxyToClient || f.Listen.Port() != listenPort || f.Target != target {
			t.Errorf("unexpected flow with our mark: %+v", f)
		}
		sawTCP = sawTCP || f.Proto == 6
		sawUDP = sawUDP || f.Proto == 17
		if f.BytesOrig == 0 || f.BytesReply == 0 || f.PacketsOrig == 0 || f.PacketsReply == 0 {
			t.Errorf("flow without accounting (nf_conntrack_acct=1): %+v", f)
		}
		t.Logf("flow proto %d %s -> %s via %s: %d/%d bytes, %d/%d packets (orig/reply)",
			f.Proto, f.Client, f.Target, f.Listen, f.BytesOrig, f.BytesReply, f.PacketsOrig, f.PacketsReply)
	}
	if !sawTCP || !sawUDP {
		t.Fatalf("conntrack by mark %#x: tcp %v udp %v in %+v", netID, sawTCP, sawUDP, flows)
	}
	t.Logf("conntrack: %d flows with mark %#x", len(flows), netID)
	if other, err := cc.Marked(netID + 1); err != nil || len(other) != 0 {
		t.Fatalf("flows with another mark: %v (%v)", other, err)
	}
	news := 0
	for news < 2 {
		select {
		case ev := <-fol.Events():
			if ev.Type == ct.EventNew && ev.Flow.Mark == netID {
				news++
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("follower: %d new events for mark %#x, want 2 (tcp, udp); dropped %d, err %v", news, netID, fol.Dropped(), fol.Err())
		}
	}

	// Teardown: the map entry first, then the flows.
	keys := []nft.Key{entries[0].Key, entries[1].Key}
	must(t, tb.Delete(keys...))
	must(t, cc.Flush(netID))
	if flows, err := cc.Marked(netID); err != nil || len(flows) != 0 {
		t.Fatalf("after flush: %v (%v)", flows, err)
	}
	sawDestroy := false
	for !sawDestroy {
		select {
		case ev := <-fol.Events():
			sawDestroy = ev.Type == ct.EventDestroy && ev.Flow.Mark == netID
		case <-time.After(5 * time.Second):
			t.Fatal("follower: no destroy event after the flush")
		}
	}

	// The next connection and datagram are first contact again: the proxy's own sockets.
	accepted := make(chan net.Addr, 1)
	go func() {
		_ = proxyTCP.SetDeadline(time.Now().Add(5 * time.Second))
		c, err := proxyTCP.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c.RemoteAddr()
		_ = c.Close()
	}()
	conn2, err := tp.client.Dial(ctx, "", listen)
	must(t, err)
	_ = conn2.Close()
	if from := <-accepted; from == nil || from.(*net.TCPAddr).IP.String() != clientAddr.String() {
		t.Fatalf("after Delete+flush the proxy accepted %v, want the client", from)
	}
	_, err = udpc.Write([]byte("again"))
	must(t, err)
	must(t, proxyUDP.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 64)
	n, from, err := proxyUDP.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "again" || from.Addr() != clientAddr {
		t.Fatalf("after Delete+flush the proxy's UDP socket got %q from %s (%v), want \"again\" from the client", buf[:n], from, err)
	}
	if fol.Dropped() != 0 {
		t.Errorf("follower dropped %d events", fol.Dropped())
	}
}

func requireNoAccept(t *testing.T, ln *net.TCPListener) {
	t.Helper()
	must(t, ln.SetDeadline(time.Now().Add(200*time.Millisecond)))
	c, err := ln.Accept()
	if err == nil {
		_ = c.Close()
		t.Fatalf("the proxy's own listener accepted %s: the kernel path did not DNAT", c.RemoteAddr())
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	must(t, ln.SetDeadline(time.Time{}))
}

func requireNoDatagram(t *testing.T, c *net.UDPConn) {
	t.Helper()
	must(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	buf := make([]byte, 64)
	n, from, err := c.ReadFromUDP(buf)
	if err == nil {
		t.Fatalf("the proxy's own UDP socket got %q from %s: the kernel path did not DNAT", buf[:n], from)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
