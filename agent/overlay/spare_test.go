package overlay_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/vishvananda/netlink"
)

func spareManager(t testing.TB, h *overlaytest.Host, spares int, idle time.Duration) *overlay.Manager {
	t.Helper()
	m, err := overlay.New(overlay.Config{NetNS: h.NS, Logger: hclog.NewNullLogger(), SpareBridges: spares, SpareIdle: idle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// spares lists the parked bridges in h and checks each is what a spare must be: a bridge,
// down, without IPv4 addresses, without ports.
func spares(t testing.TB, h *overlaytest.Host) []netlink.Link {
	t.Helper()
	nh := h.Handle(t)
	links, err := nh.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Link
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Name, "nnsp_") {
			continue
		}
		out = append(out, l)
		a := l.Attrs()
		if l.Type() != "bridge" || a.Flags&net.FlagUp != 0 || a.Alias != "nullnet:spare" {
			t.Fatalf("%s: spare %s: type %s flags %v alias %q", h.Name, a.Name, l.Type(), a.Flags, a.Alias)
		}
		if addrs, _ := nh.AddrList(l, netlink.FAMILY_V4); len(addrs) != 0 {
			t.Fatalf("%s: spare %s still has addresses %v", h.Name, a.Name, addrs)
		}
		for _, p := range links {
			if p.Attrs().MasterIndex == a.Index {
				t.Fatalf("%s: spare %s still has port %s", h.Name, a.Name, p.Attrs().Name)
			}
		}
	}
	return out
}

// endDevices lists h's devices named like a tunnel end.
func endDevices(t testing.TB, h *overlaytest.Host) []string {
	var out []string
	for _, d := range devices(t, h) {
		if !strings.HasPrefix(d, "nnsp_") {
			out = append(out, d)
		}
	}
	return out
}

func TestSpareBridgeIsReusedAcrossNetIDs(t *testing.T) {
	hosts := overlaytest.Hosts(t, prefix, 2)
	proxyHost, svcHost := hosts[0], hosts[1]
	pm, sm := spareManager(t, proxyHost, 4, time.Hour), spareManager(t, svcHost, 4, time.Hour)
	ctx := context.Background()
	svcLn := svcHost.Listen(t, "tcp", "0.0.0.0:0")
	go echo(svcLn)
	svcPort := uint16(svcLn.Addr().(*net.TCPAddr).Port)

	var spareIndex [2]int
	for round, id := range []uint32{301, 302, 303} {
		plan, _ := overlay.PlanFor(id)
		if _, err := sm.Setup(ctx, overlay.End{NetID: id, Side: overlay.SideService, Local: svcHost.Underlay,
			Remote: proxyHost.Underlay, MTU: 1400}); err != nil {
			t.Fatal(err)
		}
		if _, err := pm.Setup(ctx, overlay.End{NetID: id, Side: overlay.SideProxy, Local: proxyHost.Underlay,
			Remote: svcHost.Underlay, MTU: 1400 - 10*round}); err != nil {
			t.Fatal(err)
		}
		for i, h := range hosts {
			if s := spares(t, h); len(s) != 0 {
				t.Fatalf("round %d: %s: spare not taken: %v", round, h.Name, s)
			}
			side := overlay.SideProxy
			if i == 1 {
				side = overlay.SideService
			}
			br, err := h.Handle(t).LinkByName(overlay.NamesFor(id, side).Bridge)
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, h.Name, err)
			}
			a := br.Attrs()
			if a.Alias != overlay.Marker(id, side) || a.Flags&net.FlagUp == 0 || a.Group != overlay.GroupFor(id, side) {
				t.Fatalf("round %d: %s: bridge %+v", round, h.Name, a)
			}
			if round > 0 && a.Index != spareIndex[i] {
				t.Fatalf("round %d: %s: bridge ifindex %d, want the spare %d", round, h.Name, a.Index, spareIndex[i])
			}
		}
		if l, _ := proxyHost.Handle(t).LinkByName(overlay.NamesFor(id, overlay.SideProxy).Bridge); l.Attrs().MTU != 1400-10*round {
			t.Fatalf("round %d: proxy bridge MTU %d, want %d", round, l.Attrs().MTU, 1400-10*round)
		}
		// A second Setup of a reused end is a no-op: it matches what Setup builds.
		if res, err := sm.Setup(ctx, overlay.End{NetID: id, Side: overlay.SideService, Local: svcHost.Underlay,
			Remote: proxyHost.Underlay, MTU: 1400}); err != nil || res.Changed {
			t.Fatalf("round %d: second setup: %+v, %v", round, res, err)
		}
		roundTrip(t, proxyHost, plan.ProxyBridge.Addr().String(), netip.AddrPortFrom(plan.ServiceBridge.Addr(), svcPort).String())

		if err := sm.Teardown(ctx, id, overlay.SideService); err != nil {
			t.Fatal(err)
		}
		if errs := pm.TeardownBatch(ctx, []overlay.EndRef{{NetID: id, Side: overlay.SideProxy}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		for i, h := range hosts {
			if d := endDevices(t, h); len(d) != 0 {
				t.Fatalf("round %d: %s: end devices left: %v", round, h.Name, d)
			}
			s := spares(t, h)
			if len(s) != 1 {
				t.Fatalf("round %d: %s: %d spares, want 1", round, h.Name, len(s))
			}
			spareIndex[i] = s[0].Attrs().Index
		}
		if ends, _ := sm.Ends(); len(ends) != 0 {
			t.Fatalf("a spare is listed as an end: %+v", ends)
		}
	}
	if n, err := sm.DeleteSpares(ctx); err != nil || n != 1 || sm.Spares() != 0 {
		t.Fatalf("DeleteSpares = %d, %v; %d left", n, err, sm.Spares())
	}
	if s := spares(t, svcHost); len(s) != 0 {
		t.Fatalf("spares left after DeleteSpares: %v", s)
	}
}

func TestSparePoolIsBoundedAndReaped(t *testing.T) {
	h := overlaytest.Hosts(t, prefix, 1)[0]
	m := spareManager(t, h, 2, time.Second)
	ctx := context.Background()
	remote := netip.MustParseAddr("192.0.2.9") // no peer needed for the devices to exist
	var refs []overlay.EndRef
	for id := uint32(401); id < 405; id++ {
		if _, err := m.Setup(ctx, overlay.End{NetID: id, Side: overlay.SideService, Local: h.Underlay, Remote: remote}); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, overlay.EndRef{NetID: id, Side: overlay.SideService})
	}
	for i, err := range m.TeardownBatch(ctx, refs) {
		if err != nil {
			t.Fatalf("teardown %v: %v", refs[i], err)
		}
	}
	if d := endDevices(t, h); len(d) != 0 {
		t.Fatalf("end devices left: %v", d)
	}
	if s := spares(t, h); len(s) != 2 || m.Spares() != 2 {
		t.Fatalf("%d spares in the kernel, %d in the pool; want 2 (the bound)", len(s), m.Spares())
	}
	// Idle for SpareIdle (1s): the reaper deletes them.
	deadline := time.Now().Add(10 * time.Second)
	for len(spares(t, h)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle spares not deleted: %v", spares(t, h))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m.Spares() != 0 {
		t.Fatalf("pool still holds %d spares", m.Spares())
	}
}

func TestSameHostEndsOnSpares(t *testing.T) {
	h := overlaytest.Hosts(t, prefix, 1)[0]
	m := spareManager(t, h, 4, time.Hour)
	ctx := context.Background()
	ln := h.Listen(t, "tcp", "0.0.0.0:0")
	go echo(ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	for _, id := range []uint32{501, 502} {
		plan, _ := overlay.PlanFor(id)
		for _, side := range []overlay.Side{overlay.SideService, overlay.SideProxy} {
			if _, err := m.Setup(ctx, overlay.End{NetID: id, Side: side, Local: h.Underlay, Remote: h.Underlay}); err != nil {
				t.Fatal(err)
			}
		}
		roundTrip(t, h, plan.ProxyBridge.Addr().String(), netip.AddrPortFrom(plan.ServiceBridge.Addr(), port).String())
		for _, err := range m.TeardownBatch(ctx, []overlay.EndRef{{NetID: id, Side: overlay.SideService}, {NetID: id, Side: overlay.SideProxy}}) {
			if err != nil {
				t.Fatal(err)
			}
		}
		if d := endDevices(t, h); len(d) != 0 {
			t.Fatalf("net %d: end devices left: %v", id, d)
		}
		if s := spares(t, h); len(s) != 2 {
			t.Fatalf("net %d: %d spares, want 2", id, len(s))
		}
	}
}

func TestCleanupRemovesSpares(t *testing.T) {
	h := overlaytest.Hosts(t, prefix, 1)[0]
	ctx := context.Background()
	m := spareManager(t, h, 4, time.Hour)
	if _, err := m.Setup(ctx, overlay.End{NetID: 601, Side: overlay.SideProxy, Local: h.Underlay,
		Remote: netip.MustParseAddr("192.0.2.9")}); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx, 601, overlay.SideProxy); err != nil {
		t.Fatal(err)
	}
	// A bridge caught between the two steps of parking: the end's name, the spare alias.
	nh := h.Handle(t)
	half := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	half.Name = "br_602_s"
	if err := nh.LinkAdd(half); err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetAlias(half, "nullnet:spare"); err != nil {
		t.Fatal(err)
	}
	if len(spares(t, h)) != 1 {
		t.Fatal("no spare to clean up")
	}
	removed, err := manager(t, h).Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 || len(devices(t, h)) != 0 {
		t.Fatalf("Cleanup removed %v; left %v", removed, devices(t, h))
	}
}

// BenchmarkSpareChurn sets up 64 ends, removes them with batches of 16, and again, b.N times:
// with spares (after the first round every bridge is a spare) and without.
func BenchmarkSpareChurn(b *testing.B) {
	for _, spares := range []int{0, 256} {
		b.Run("spares="+strconv.Itoa(spares), func(b *testing.B) {
			h := overlaytest.Hosts(b, prefix, 1)[0]
			m := spareManager(b, h, spares, time.Hour)
			ctx := context.Background()
			remote := netip.MustParseAddr("192.0.2.9")
			var setup, teardown time.Duration
			for i := 0; i < b.N; i++ {
				var refs []overlay.EndRef
				start := time.Now()
				for id := uint32(1000); id < 1064; id++ {
					if _, err := m.Setup(ctx, overlay.End{NetID: id + uint32(i%2)*100, Side: overlay.SideService, Local: h.Underlay, Remote: remote}); err != nil {
						b.Fatal(err)
					}
					refs = append(refs, overlay.EndRef{NetID: id + uint32(i%2)*100, Side: overlay.SideService})
				}
				mid := time.Now()
				for j := 0; j < len(refs); j += 16 {
					for _, err := range m.TeardownBatch(ctx, refs[j:j+16]) {
						if err != nil {
							b.Fatal(err)
						}
					}
				}
				setup += mid.Sub(start)
				teardown += time.Since(mid)
			}
			b.ReportMetric(float64(setup.Microseconds())/1000/float64(64*b.N), "setup-ms/end")
			b.ReportMetric(float64(teardown.Microseconds())/1000/float64(64*b.N), "teardown-ms/end")
		})
	}
}

// TestSparesUnderConcurrentChurn runs setups and teardowns of many net ids at once on two
// hosts with spares on, while a watcher checks that no bridge ever has more than one port: a
// spare handed out before its old port was deleted would join two tunnels into one bridge.
func TestSparesUnderConcurrentChurn(t *testing.T) {
	hosts := overlaytest.Hosts(t, prefix, 2)
	mgrs := []*overlay.Manager{spareManager(t, hosts[0], 8, time.Hour), spareManager(t, hosts[1], 8, time.Hour)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchErr := make(chan error, 1)
	go func() {
		handles := []*netlink.Handle{hosts[0].Handle(t), hosts[1].Handle(t)}
		for ctx.Err() == nil {
			for i, nh := range handles {
				links, err := nh.LinkList()
				if err != nil {
					continue // interrupted dump while devices change
				}
				ports := map[int]int{}
				for _, l := range links {
					if m := l.Attrs().MasterIndex; m != 0 {
						ports[m]++
					}
				}
				for _, l := range links {
					if ports[l.Attrs().Index] > 1 {
						watchErr <- fmt.Errorf("%s: bridge %s has %d ports", hosts[i].Name, l.Attrs().Name, ports[l.Attrs().Index])
						return
					}
				}
			}
		}
		watchErr <- nil
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 15; round++ {
				id := uint32(700 + w*20 + round)
				var refs [2][]overlay.EndRef
				for i, m := range mgrs {
					side := []overlay.Side{overlay.SideProxy, overlay.SideService}[i]
					if _, err := m.Setup(ctx, overlay.End{NetID: id, Side: side, Local: hosts[i].Underlay, Remote: hosts[1-i].Underlay}); err != nil {
						errs <- err
						return
					}
					refs[i] = []overlay.EndRef{{NetID: id, Side: side}}
				}
				for i, m := range mgrs {
					var err error
					if round%2 == 0 {
						err = m.TeardownBatch(ctx, refs[i])[0]
					} else {
						err = m.Teardown(ctx, refs[i][0].NetID, refs[i][0].Side)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := <-watchErr; err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if d := endDevices(t, h); len(d) != 0 {
			t.Fatalf("%s: end devices left: %v", h.Name, d)
		}
		spares(t, h)
	}
}
