package overlay_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/vishvananda/netlink"
)

const prefix = "nnov"

func manager(t testing.TB, h *overlaytest.Host) *overlay.Manager {
	t.Helper()
	m, err := overlay.New(overlay.Config{NetNS: h.NS, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// devices lists the device names in h that look like nullnet's (by name or by marker).
func devices(t testing.TB, h *overlaytest.Host) []string {
	t.Helper()
	links, err := h.Handle(t).LinkList()
	if err != nil {
		t.Fatalf("%s: list links: %v", h.Name, err)
	}
	var out []string
	for _, l := range links {
		n := l.Attrs().Name
		if strings.HasPrefix(n, "br_") || strings.HasPrefix(n, "vx_") || strings.HasPrefix(n, "vp_") ||
			strings.HasPrefix(l.Attrs().Alias, overlay.MarkerPrefix) {
			out = append(out, n)
		}
	}
	return out
}

// echo serves one line back per connection on ln.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				_, _ = c.Write([]byte("echo " + line))
			}
		}()
	}
}

// roundTrip connects from host `from` (source address local) to addr and checks the echo.
func roundTrip(t *testing.T, from *overlaytest.Host, local, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	// The first packets resolve ARP across the tunnel; retry until the deadline.
	for c == nil {
		c, err = from.Dial(ctx, local, addr)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("%s: connect %s -> %s: %v", from.Name, local, addr, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("hello over the overlay\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "echo hello over the overlay\n" {
		t.Fatalf("%s -> %s: got %q, %v", local, addr, got, err)
	}
	if la := c.LocalAddr().(*net.TCPAddr).IP.String(); local != "" && la != local {
		t.Fatalf("connection left from %s, want %s", la, local)
	}
}

func TestTunnelBetweenTwoHosts(t *testing.T) {
	hosts := overlaytest.Hosts(t, prefix, 2)
	proxyHost, svcHost := hosts[0], hosts[1]
	for _, h := range hosts {
		// Strict reverse-path filtering (what many distributions ship) must not drop tunnel
		// traffic: the peer's bridge address is on-link through the same bridge.
		for _, k := range []string{"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"} {
			if err := h.Sysctl(k, "1"); err != nil {
				t.Fatalf("%s: %s: %v", h.Name, k, err)
			}
		}
	}
	pm, sm := manager(t, proxyHost), manager(t, svcHost)
	const id = 4242
	plan, _ := overlay.PlanFor(id)
	ctx := context.Background()
	// The service end is bound to its underlay interface; the proxy end is routed.
	svcEnd := overlay.End{NetID: id, Side: overlay.SideService, Local: svcHost.Underlay, Remote: proxyHost.Underlay, Device: "eth0"}
	proxyEnd := overlay.End{NetID: id, Side: overlay.SideProxy, Local: proxyHost.Underlay, Remote: svcHost.Underlay}

	res, err := sm.Setup(ctx, svcEnd)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.MTU != 1450 || res.Bridge != plan.ServiceBridge {
		t.Fatalf("service end: %+v", res)
	}
	if _, err := pm.Setup(ctx, proxyEnd); err != nil {
		t.Fatal(err)
	}

	// The kernel objects are what the plan says.
	vx, err := svcHost.Handle(t).LinkByName("vx_4242_s")
	if err != nil {
		t.Fatal(err)
	}
	v := vx.(*netlink.Vxlan)
	if v.VxlanId != id || v.Port != 4789 || !v.Learning || v.MTU != 1450 || v.SrcAddr.String() != svcHost.Underlay.String() ||
		v.Group.String() != proxyHost.Underlay.String() || v.Alias != "nullnet:4242:service" {
		t.Fatalf("vxlan device: %+v", v)
	}
	if eth0, _ := svcHost.Handle(t).LinkByName("eth0"); v.VtepDevIndex != eth0.Attrs().Index {
		t.Fatalf("vxlan bound to ifindex %d, want eth0 (%d)", v.VtepDevIndex, eth0.Attrs().Index)
	}

	// Real traffic, both directions: +4 -> host service on 0.0.0.0 (reached at +2), and
	// +2 -> a listener on the proxy host's bridge address.
	svcLn := svcHost.Listen(t, "tcp", "0.0.0.0:0")
	go echo(svcLn)
	svcPort := svcLn.Addr().(*net.TCPAddr).Port
	roundTrip(t, proxyHost, plan.ProxyBridge.Addr().String(), netip.AddrPortFrom(plan.ServiceBridge.Addr(), uint16(svcPort)).String())
	proxyLn := proxyHost.Listen(t, "tcp", plan.ProxyBridge.Addr().String()+":0")
	go echo(proxyLn)
	roundTrip(t, svcHost, plan.ServiceBridge.Addr().String(), proxyLn.Addr().String())

	// Setting up again with the same parameters is a no-op: same devices, same ifindex.
	before, _ := svcHost.Handle(t).LinkByName("br_4242_s")
	res, err = sm.Setup(ctx, svcEnd)
	if err != nil || res.Changed {
		t.Fatalf("second setup: %+v, %v; want unchanged", res, err)
	}
	after, _ := svcHost.Handle(t).LinkByName("br_4242_s")
	if before.Attrs().Index != after.Attrs().Index {
		t.Fatal("second setup recreated the bridge")
	}

	// Different parameters replace the end, and the tunnel still works.
	changed := proxyEnd
	changed.MTU = 1400
	res, err = pm.Setup(ctx, changed)
	if err != nil || !res.Changed || !res.Replaced {
		t.Fatalf("setup with a new MTU: %+v, %v; want replaced", res, err)
	}
	if l, _ := proxyHost.Handle(t).LinkByName("vx_4242_c"); l == nil || l.Attrs().MTU != 1400 {
		t.Fatalf("vxlan after replace: %+v", l)
	}
	roundTrip(t, proxyHost, plan.ProxyBridge.Addr().String(), netip.AddrPortFrom(plan.ServiceBridge.Addr(), uint16(svcPort)).String())

	ends, err := sm.Ends()
	if err != nil || len(ends) != 1 || ends[0].NetID != id || ends[0].Side != overlay.SideService {
		t.Fatalf("Ends() = %+v, %v", ends, err)
	}

	// Teardown leaves nothing; tearing down an absent end is fine.
	for i := 0; i < 2; i++ {
		if err := sm.Teardown(ctx, id, overlay.SideService); err != nil {
			t.Fatalf("teardown %d: %v", i, err)
		}
		if err := pm.Teardown(ctx, id, overlay.SideProxy); err != nil {
			t.Fatalf("teardown %d: %v", i, err)
		}
	}
	for _, h := range hosts {
		if d := devices(t, h); len(d) != 0 {
			t.Fatalf("%s: devices left after teardown: %v", h.Name, d)
		}
	}
}

func TestCleanupRemovesOnlyMarkedDevices(t *testing.T) {
	h := overlaytest.Hosts(t, prefix, 1)[0]
	nh := h.Handle(t)
	ctx := context.Background()
	peer := netip.MustParseAddr("192.168.77.200")

	m := manager(t, h)
	for _, id := range []uint32{101, 102, 2097151} {
		if _, err := m.Setup(ctx, overlay.End{NetID: id, Side: overlay.SideProxy, Local: h.Underlay, Remote: peer}); err != nil {
			t.Fatal(err)
		}
	}
	// Devices nullnet did not make: one that even has one of our names, and a user bridge.
	for _, name := range []string{"br_103_s", "userbr"} {
		br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
		br.Name = name
		if err := nh.LinkAdd(br); err != nil {
			t.Fatal(err)
		}
	}
	// A device caught between create and mark (killed in that instant): our group, our name
	// pattern, no alias. It is nullnet's and goes too.
	caught := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	caught.Name, caught.Group = "br_104_c", overlay.GroupFor(104, overlay.SideProxy)
	if err := nh.LinkAdd(caught); err != nil {
		t.Fatal(err)
	}
	// Simulated crash: the manager is gone without tearing down; a new one cleans up.
	m.Close()
	m2 := manager(t, h)
	removed, err := m2.Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 7 {
		t.Fatalf("removed %v, want the 4 bridges and 3 vxlan devices", removed)
	}
	left := devices(t, h)
	if len(left) != 1 || left[0] != "br_103_s" {
		t.Fatalf("after cleanup: %v, want only the unmarked br_103_s", left)
	}
	if _, err := nh.LinkByName("userbr"); err != nil {
		t.Fatalf("the user's bridge was removed: %v", err)
	}

	// nullnet never adopts or deletes a device it did not mark.
	_, err = m2.Setup(ctx, overlay.End{NetID: 103, Side: overlay.SideService, Local: h.Underlay, Remote: peer})
	if !errors.Is(err, overlay.ErrNotOurs) || !strings.Contains(err.Error(), "br_103_s") {
		t.Fatalf("setup over a foreign device: %v, want ErrNotOurs naming br_103_s", err)
	}
	if err := m2.Teardown(ctx, 103, overlay.SideService); !errors.Is(err, overlay.ErrNotOurs) {
		t.Fatalf("teardown of a foreign device: %v, want ErrNotOurs", err)
	}
}

func TestFailedSetupRollsBack(t *testing.T) {
	h := overlaytest.Hosts(t, prefix, 1)[0]
	nh := h.Handle(t)
	peer := netip.MustParseAddr("192.168.77.200")
	// A foreign VXLAN device holding VNI 150 on the same local address and port makes the
	// kernel refuse ours after the bridge already exists.
	foreign := &netlink.Vxlan{LinkAttrs: netlink.NewLinkAttrs(), VxlanId: 150, SrcAddr: net.IP(h.Underlay.AsSlice()), Port: 4789}
	foreign.Name = "foreignvx"
	if err := nh.LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	m := manager(t, h)
	_, err := m.Setup(context.Background(), overlay.End{NetID: 150, Side: overlay.SideService, Local: h.Underlay, Remote: peer})
	var opErr *overlay.OpError
	if !errors.As(err, &opErr) || opErr.Device != "vx_150_s" || opErr.Op != "create vxlan" {
		t.Fatalf("error %v: want an OpError for create vxlan vx_150_s", err)
	}
	if !strings.Contains(err.Error(), "(EEXIST)") || !strings.Contains(err.Error(), "net 150 service end") {
		t.Fatalf("error text %q should name the net id, side and errno", err)
	}
	if d := devices(t, h); len(d) != 0 {
		t.Fatalf("partial setup left %v", d)
	}
}

func TestSameHostJoinsBridgesWithVeth(t *testing.T) {
	for _, order := range [][]overlay.Side{{overlay.SideService, overlay.SideProxy}, {overlay.SideProxy, overlay.SideService}} {
		t.Run(fmt.Sprintf("%s-first", order[0]), func(t *testing.T) {
			h := overlaytest.Hosts(t, prefix, 1)[0]
			nh := h.Handle(t)
			m := manager(t, h)
			ctx := context.Background()
			const id = 777
			plan, _ := overlay.PlanFor(id)
			end := func(s overlay.Side) overlay.End {
				return overlay.End{NetID: id, Side: s, Local: h.Underlay, Remote: h.Underlay}
			}
			if _, err := m.Setup(ctx, end(order[0])); err != nil {
				t.Fatal(err)
			}
			if d := devices(t, h); len(d) != 1 {
				t.Fatalf("first end alone: %v, want just its bridge", d)
			}
			if _, err := m.Setup(ctx, end(order[1])); err != nil {
				t.Fatal(err)
			}
			for _, s := range order {
				n := overlay.NamesFor(id, s)
				vp, err := nh.LinkByName(n.Veth)
				if err != nil {
					t.Fatalf("%s: %v", n.Veth, err)
				}
				br, _ := nh.LinkByName(n.Bridge)
				if vp.Type() != "veth" || vp.Attrs().MasterIndex != br.Attrs().Index || vp.Attrs().Alias != overlay.Marker(id, s) {
					t.Fatalf("%s: %+v not attached to %s / not marked", n.Veth, vp.Attrs(), n.Bridge)
				}
				if l, _ := nh.LinkByName(n.VXLAN); l != nil {
					t.Fatalf("same-host end has a VXLAN device %s", n.VXLAN)
				}
			}
			// Both ends are idempotent, whichever came first.
			for _, s := range order {
				if res, err := m.Setup(ctx, end(s)); err != nil || res.Changed {
					t.Fatalf("repeat setup of %s: %+v, %v", s, res, err)
				}
			}
			ln := h.Listen(t, "tcp", "0.0.0.0:0")
			go echo(ln)
			port := ln.Addr().(*net.TCPAddr).Port
			roundTrip(t, h, plan.ProxyBridge.Addr().String(), netip.AddrPortFrom(plan.ServiceBridge.Addr(), uint16(port)).String())

			if err := m.Teardown(ctx, id, order[0]); err != nil {
				t.Fatal(err)
			}
			if d := devices(t, h); len(d) != 1 || d[0] != overlay.NamesFor(id, order[1]).Bridge {
				t.Fatalf("after tearing down one end: %v, want only the other bridge", d)
			}
			if res, err := m.Setup(ctx, end(order[1])); err != nil || res.Changed {
				t.Fatalf("remaining end is consistent on its own: %+v, %v", res, err)
			}
			if err := m.Teardown(ctx, id, order[1]); err != nil {
				t.Fatal(err)
			}
			if d := devices(t, h); len(d) != 0 {
				t.Fatalf("left: %v", d)
			}
		})
	}
}

func TestSetupValidates(t *testing.T) {
	h := overlaytest.Hosts(t, prefix, 1)[0]
	m := manager(t, h)
	a := h.Underlay
	cases := []overlay.End{
		{NetID: 100, Side: overlay.SideService, Local: a, Remote: a},
		{NetID: 101, Side: 0, Local: a, Remote: a},
		{NetID: 101, Side: overlay.SideProxy, Local: netip.MustParseAddr("::1"), Remote: a},
		{NetID: 101, Side: overlay.SideProxy, Local: a},
		{NetID: 101, Side: overlay.SideProxy, Local: a, Remote: a, MTU: 100},
		{NetID: 101, Side: overlay.SideProxy, Local: a, Remote: a, Device: "nosuchdev0"},
	}
	for _, e := range cases {
		if _, err := m.Setup(context.Background(), e); err == nil {
			t.Errorf("Setup(%+v): want an error", e)
		}
	}
	if d := devices(t, h); len(d) != 0 {
		t.Fatalf("invalid setups created %v", d)
	}
}
