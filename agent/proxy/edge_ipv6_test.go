package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// clientNS is a network namespace of its own for a client, joined to the test's namespace by
// a veth pair with IPv6 addresses (no duplicate address detection, so they work at once).
type clientNS struct {
	ns         netns.NsHandle
	addr, peer netip.Addr // the client's address, and the proxy side's on the same link
	link       string     // the client's end of the veth pair
}

// newClientNS makes a namespace with a veth pair: name in the current namespace with peer,
// name+"c" in the new one with addr (both /64).
func newClientNS(t *testing.T, name string, peer, addr netip.Addr) *clientNS {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() { // exits locked: the thread that switched namespaces is never reused
		runtime.LockOSThread()
		ns, err := netns.New()
		ch <- result{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "c"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s: %v", name, err)
	}
	inner, err := netlink.LinkByName(name + "c")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(inner, int(r.ns)); err != nil {
		t.Fatalf("move %s: %v", inner.Attrs().Name, err)
	}
	outer, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	addAddr := func(h *netlink.Handle, l netlink.Link, a netip.Addr) {
		ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(64, 128)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("address %s on %s: %v", a, l.Attrs().Name, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	host, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	addAddr(host, outer, peer)
	addAddr(host, outer, linkLocalProxy)
	h, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	inner, err = h.LinkByName(name + "c")
	if err != nil {
		t.Fatal(err)
	}
	addAddr(h, inner, addr)
	addAddr(h, inner, linkLocalClient)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &clientNS{ns: r.ns, addr: addr, peer: peer, link: name + "c"}
}

// Link-local addresses of every veth pair (each pair is a link of its own).
var (
	linkLocalProxy  = netip.MustParseAddr("fe80::1")
	linkLocalClient = netip.MustParseAddr("fe80::2")
)

// udpLinkLocal exchanges one datagram with the proxy port at its link-local address: the
// reply must leave through the client's link (the sockaddr_in6 scope).
func (c *clientNS) udpLinkLocal(t *testing.T, port uint16) error {
	var conn *net.UDPConn
	var err error
	c.run(t, func() {
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(linkLocalProxy.WithZone(c.link), port)))
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	return exchange(conn, []byte("link-local hello"), 3)
}

// run calls fn on a thread inside the namespace; sockets fn opens stay in it, and processes
// it starts run in it.
func (c *clientNS) run(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() { // exits locked: the thread is thrown away afterwards
		runtime.LockOSThread()
		if err := netns.Set(c.ns); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("entering the client namespace: %v", err)
	}
}

// tcp returns what the client sees on a TCP connection to the proxy port at its peer address.
func (c *clientNS) tcp(t *testing.T, port uint16) string {
	var out string
	c.run(t, func() { out = tcpOutcome(t, c.addr.String(), netip.AddrPortFrom(c.peer, port).String()) })
	return out
}

// udp exchanges one datagram with the proxy port (a few attempts) and reports the error.
func (c *clientNS) udp(t *testing.T, port uint16, attempts int) error {
	var conn *net.UDPConn
	var err error
	c.run(t, func() {
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.peer, port)))
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	return exchange(conn, []byte("v6 hello "+c.addr.String()), attempts)
}

// curl runs curl in the namespace against http://[peer]:port/ with Host: service.
func (c *clientNS) curl(t *testing.T, port uint16, service string) (int, string) {
	t.Helper()
	var out []byte
	var err error
	c.run(t, func() {
		url := fmt.Sprintf("http://[%s]:%d/", c.peer, port)
		out, err = exec.Command("curl", "-6", "-g", "-sS", "--max-time", "10", "-w", "\n%{http_code}", "-H", "Host: "+service, url).CombinedOutput()
	})
	if err != nil {
		t.Fatalf("curl -6 from %s: %v (%s)", c.addr, err, out)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	code, _ := strconv.Atoi(s[i+1:])
	return code, s[:i]
}

// TestIPv6Clients: with the default bind address (0.0.0.0: one dual-stack socket) IPv6 clients
// in namespaces of their own reach TCP, UDP (replies go back to their IPv6 address) and HTTP
// services whose upstreams are IPv4; the Proxy call and X-Forwarded-For carry their address,
// and IPv4 clients of the same sockets appear unmapped. An IPv6 allow-list admits one
// namespace and refuses the other.
func TestIPv6Clients(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("this test needs curl: %v", err)
	}
	c1 := newClientNS(t, "nnpol1", netip.MustParseAddr("2001:db8:21::1"), netip.MustParseAddr("2001:db8:21::2"))
	c2 := newClientNS(t, "nnpol2", netip.MustParseAddr("2001:db8:22::1"), netip.MustParseAddr("2001:db8:22::2"))

	res := newRecordingResolver()
	tcpUp := tcpUpstream(t, echo)
	res.set("db", addrOf(t, tcpUp.Addr()))
	udpUp := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("dns", addrOf(t, udpUp.LocalAddr()))
	webAddr, _ := headerEchoUpstream(t)
	res.set("web", netip.MustParseAddrPort(webAddr))
	tp := startProxy(t, res, func(a *config.Config, c *Config) {
		a.Proxy.BindAddr = config.Default().Proxy.BindAddr // the default: every address, both families
		a.Proxy.HTTPAddr = "0.0.0.0:0"
		c.DisableHTTP = false
	})
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	_, hp, _ := net.SplitHostPort(tp.http.Addr())
	httpPort64, _ := strconv.ParseUint(hp, 10, 16)
	httpPort := uint16(httpPort64)
	tcpPort, udpPort := freePort(t), freePort(t)
	tp.applyBundle(bundle(1, tcpMapping("db", tcpPort, nil), udpMapping("dns", udpPort, nil),
		&pb.PortMapping{Service: "web", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP}))
	tp.waitListening(t, TCP, tcpPort)
	tp.waitListening(t, UDP, udpPort)

	// Both namespaces reach every protocol.
	for _, c := range []*clientNS{c1, c2} {
		if got := c.tcp(t, tcpPort); got != "served" {
			t.Errorf("tcp from %s: %s", c.addr, got)
		}
		if err := c.udp(t, udpPort, 3); err != nil {
			t.Errorf("udp from %s: %v", c.addr, err)
		}
		code, body := c.curl(t, httpPort, "web")
		var hdr map[string][]string
		_ = json.Unmarshal([]byte(body), &hdr)
		if code != 200 || len(hdr["X-Forwarded-For"]) != 1 || hdr["X-Forwarded-For"][0] != c.addr.String() {
			t.Errorf("http from %s: %d, X-Forwarded-For %v (%s)", c.addr, code, hdr["X-Forwarded-For"], body)
		}
		if n := res.calls(c.addr.String()); n != 3 {
			t.Errorf("Proxy calls with client_ip %s: %d, want 3 (tcp, udp, http)", c.addr, n)
		}
	}
	// A link-local client: replies go back through its interface (c2's link is not the one a
	// route lookup without the scope finds first); the server sees no zone.
	if err := c2.udpLinkLocal(t, udpPort); err != nil {
		t.Errorf("udp from a link-local client: %v", err)
	}
	if n := res.calls(linkLocalClient.String()); n != 1 {
		t.Errorf("Proxy calls with client_ip %s: %d, want 1", linkLocalClient, n)
	}
	// An IPv4 client of the same dual-stack sockets is a.b.c.d, never ::ffff:a.b.c.d.
	if got := tcpOutcome(t, "127.0.0.1", fmt.Sprintf("127.0.0.1:%d", tcpPort)); got != "served" {
		t.Errorf("tcp from IPv4: %s", got)
	}
	code, body := curl(t, fmt.Sprintf("http://127.0.0.1:%d/", httpPort), "-H", "Host: web")
	if code != 200 || !strings.Contains(body, `"X-Forwarded-For":["127.0.0.1"]`) {
		t.Errorf("http from IPv4: %d %s", code, body)
	}
	res.mu.Lock()
	for a := range res.clients {
		if a.Is4In6() {
			t.Errorf("a Proxy call carried a mapped address %s", a)
		}
	}
	res.mu.Unlock()

	// An IPv6 allow-list: c1's network in, c2 out on every protocol (live, same listeners).
	allow := &pb.ServicePolicy{Allow: []string{"2001:db8:21::/64", "127.0.0.0/8"}}
	tp.applyBundle(bundle(2, tcpMapping("db", tcpPort, allow), udpMapping("dns", udpPort, allow),
		&pb.PortMapping{Service: "web", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP, Policy: allow}))
	if got := c1.tcp(t, tcpPort); got != "served" {
		t.Errorf("allowed tcp from %s: %s", c1.addr, got)
	}
	if got := c2.tcp(t, tcpPort); got != "reset" {
		t.Errorf("refused tcp from %s: %s", c2.addr, got)
	}
	if code, _ := c1.curl(t, httpPort, "web"); code != 200 {
		t.Errorf("allowed http from %s: %d", c1.addr, code)
	}
	if code, _ := c2.curl(t, httpPort, "web"); code != 403 {
		t.Errorf("refused http from %s: %d", c2.addr, code)
	}
	// c2 had a UDP session before the change: it keeps it (policies apply to new sessions);
	// a new source port is a new session and is dropped.
	if err := c2.udp(t, udpPort, 1); err == nil {
		t.Errorf("new udp session from %s served despite the allow-list", c2.addr)
	}
	if n := res.calls(c2.addr.String()); n != 3 {
		t.Errorf("refused client %s caused %d more Proxy calls", c2.addr, n-3)
	}
	if !bytes.Contains([]byte(fmt.Sprint(tp.status())), []byte("listening")) {
		t.Error("listeners not listening after the change")
	}
}
