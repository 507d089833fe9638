package overlay_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/vishvananda/netlink"
)

// Recover keeps exactly the complete ends an earlier run built (a VXLAN end and both ends of a
// same-host pair), with their parameters read back, and removes every other device nullnet
// owns: a half-built end, a bridge caught before its mark, a spare bridge. Foreign devices stay.
func TestRecoverKeepsCompleteEnds(t *testing.T) {
	h := overlaytest.Hosts(t, prefix, 1)[0]
	nh := h.Handle(t)
	ctx := context.Background()
	peer := netip.MustParseAddr("192.168.77.200")

	m, err := overlay.New(overlay.Config{NetNS: h.NS, Logger: hclog.NewNullLogger(), SpareBridges: 2})
	if err != nil {
		t.Fatal(err)
	}
	must := func(e overlay.End) {
		t.Helper()
		if _, err := m.Setup(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	must(overlay.End{NetID: 101, Side: overlay.SideProxy, Local: h.Underlay, Remote: peer, MTU: 1400})
	must(overlay.End{NetID: 102, Side: overlay.SideService, Local: h.Underlay, Remote: h.Underlay})
	must(overlay.End{NetID: 102, Side: overlay.SideProxy, Local: h.Underlay, Remote: h.Underlay})
	must(overlay.End{NetID: 103, Side: overlay.SideService, Local: h.Underlay, Remote: peer})
	must(overlay.End{NetID: 104, Side: overlay.SideService, Local: h.Underlay, Remote: peer})
	// 103 loses its VXLAN device (half removed); 104 is torn down into a spare bridge.
	if l, err := nh.LinkByName("vx_103_s"); err != nil {
		t.Fatal(err)
	} else if err := nh.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx, 104, overlay.SideService); err != nil {
		t.Fatal(err)
	}
	if m.Spares() != 1 {
		t.Fatalf("%d spares, want 1", m.Spares())
	}
	caught := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	caught.Name, caught.Group = "br_105_c", overlay.GroupFor(105, overlay.SideProxy)
	foreign := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	foreign.Name = "br_106_s"
	for _, l := range []netlink.Link{caught, foreign} {
		if err := nh.LinkAdd(l); err != nil {
			t.Fatal(err)
		}
	}
	m.Close() // the crash: nothing torn down

	m2 := manager(t, h)
	kept, removed, err := m2.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		id   uint32
		side overlay.Side
	}
	var got []key
	for _, e := range kept {
		got = append(got, key{e.NetID, e.Side})
	}
	want := []key{{101, overlay.SideProxy}, {102, overlay.SideService}, {102, overlay.SideProxy}}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %+v, want %v", kept, want)
	}
	if e := kept[0]; e.Local != h.Underlay || e.Remote != peer || e.MTU != 1400 || e.SameHost ||
		e.Bridge.String() != "10.0.3.44/29" {
		t.Fatalf("VXLAN end read back as %+v", e)
	}
	if e := kept[1]; !e.SameHost || e.Local.IsValid() {
		t.Fatalf("same-host end read back as %+v", e)
	}
	slices.Sort(removed)
	if len(removed) != 3 || removed[0] != "br_103_s" || removed[1] != "br_105_c" || removed[2][:5] != "nnsp_" {
		t.Fatalf("removed %v, want br_103_s, br_105_c and the spare", removed)
	}
	left := devices(t, h)
	slices.Sort(left)
	if !slices.Equal(left, []string{"br_101_c", "br_102_c", "br_102_s", "br_106_s", "vp_102_c", "vp_102_s", "vx_101_c"}) {
		t.Fatalf("devices after recovery: %v", left)
	}
	// A kept end is an ordinary end: setup finds it unchanged, teardown removes it.
	res, err := m2.Setup(ctx, overlay.End{NetID: 101, Side: overlay.SideProxy, Local: h.Underlay, Remote: peer, MTU: 1400})
	if err != nil || res.Changed {
		t.Fatalf("setup of a kept end: %+v %v, want unchanged", res, err)
	}
	if err := m2.Teardown(ctx, 101, overlay.SideProxy); err != nil {
		t.Fatal(err)
	}
}
