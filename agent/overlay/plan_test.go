package overlay

import (
	"net/netip"
	"testing"
)

func TestPlanFor(t *testing.T) {
	cases := []struct {
		id                              uint32
		block, sInner, sBr, pInner, pBr string
		wantErr                         bool
	}{
		// Upstream's worked example: 101 -> offset 808 -> 10.0.3.40.
		{id: 101, block: "10.0.3.40/29", sInner: "10.0.3.41/29", sBr: "10.0.3.42/29", pInner: "10.0.3.43/29", pBr: "10.0.3.44/29"},
		{id: 102, block: "10.0.3.48/29", sInner: "10.0.3.49/29", sBr: "10.0.3.50/29", pInner: "10.0.3.51/29", pBr: "10.0.3.52/29"},
		// 32 ids per /24: 128*8 = 1024 = 10.0.4.0.
		{id: 128, block: "10.0.4.0/29", sInner: "10.0.4.1/29", sBr: "10.0.4.2/29", pInner: "10.0.4.3/29", pBr: "10.0.4.4/29"},
		{id: 2097151, block: "10.255.255.248/29", sInner: "10.255.255.249/29", sBr: "10.255.255.250/29", pInner: "10.255.255.251/29", pBr: "10.255.255.252/29"},
		{id: 100, wantErr: true},
		{id: 0, wantErr: true},
		{id: 2097152, wantErr: true}, // would be 11.0.0.0
	}
	for _, tc := range cases {
		p, err := PlanFor(tc.id)
		if tc.wantErr {
			if err == nil {
				t.Errorf("PlanFor(%d): want error, got %+v", tc.id, p)
			}
			continue
		}
		if err != nil {
			t.Fatalf("PlanFor(%d): %v", tc.id, err)
		}
		for name, got := range map[string]netip.Prefix{tc.block: p.Block, tc.sInner: p.ServiceInner, tc.sBr: p.ServiceBridge, tc.pInner: p.ProxyInner, tc.pBr: p.ProxyBridge} {
			if got.String() != name {
				t.Errorf("PlanFor(%d): got %s, want %s", tc.id, got, name)
			}
		}
		if p.Bridge(SideService) != p.ServiceBridge || p.Bridge(SideProxy) != p.ProxyBridge ||
			p.Inner(SideService) != p.ServiceInner || p.Inner(SideProxy) != p.ProxyInner {
			t.Errorf("PlanFor(%d): Bridge/Inner by side disagree with the fields", tc.id)
		}
		if !p.Block.Contains(p.ProxyBridge.Addr()) || p.Block.Masked() != p.Block {
			t.Errorf("PlanFor(%d): addresses outside the block", tc.id)
		}
		up, err := Upstream(tc.id)
		if err != nil || up != p.ServiceBridge.Addr() {
			t.Errorf("Upstream(%d) = %s, %v; want %s", tc.id, up, err, p.ServiceBridge.Addr())
		}
	}
}

func TestPlanBlocksDisjoint(t *testing.T) {
	// Neighbouring ids never share a block, across byte boundaries too.
	for _, id := range []uint32{101, 127, 128, 8191, 8192, 2097150} {
		a, _ := PlanFor(id)
		b, _ := PlanFor(id + 1)
		if a.Block.Overlaps(b.Block) {
			t.Errorf("blocks of %d (%s) and %d (%s) overlap", id, a.Block, id+1, b.Block)
		}
	}
}

func TestNamesFor(t *testing.T) {
	cases := []struct {
		id   uint32
		side Side
		want Names
	}{
		{101, SideService, Names{Bridge: "br_101_s", VXLAN: "vx_101_s", Veth: "vp_101_s"}},
		{101, SideProxy, Names{Bridge: "br_101_c", VXLAN: "vx_101_c", Veth: "vp_101_c"}},
		{MaxNetID, SideProxy, Names{Bridge: "br_2097151_c", VXLAN: "vx_2097151_c", Veth: "vp_2097151_c"}},
	}
	for _, tc := range cases {
		got := NamesFor(tc.id, tc.side)
		if got != tc.want {
			t.Errorf("NamesFor(%d, %s) = %+v, want %+v", tc.id, tc.side, got, tc.want)
		}
		// IFNAMSIZ is 16 including the terminating NUL.
		for _, n := range []string{got.Bridge, got.VXLAN, got.Veth} {
			if len(n) > 15 {
				t.Errorf("%q is longer than IFNAMSIZ-1", n)
			}
		}
	}
}

func TestMarker(t *testing.T) {
	cases := []struct {
		alias string
		id    uint32
		side  Side
		ok    bool
	}{
		{Marker(101, SideService), 101, SideService, true},
		{Marker(MaxNetID, SideProxy), MaxNetID, SideProxy, true},
		{"nullnet:101:service", 101, SideService, true},
		{"nullnet:101:proxy", 101, SideProxy, true},
		{"", 0, 0, false},
		{"docker bridge", 0, 0, false},
		{"nullnet:", 0, 0, false},
		{"nullnet:101", 0, 0, false},
		{"nullnet:101:client", 0, 0, false},
		{"nullnet:abc:service", 0, 0, false},
		{"nullnet:5:service", 0, 0, false}, // below MinNetID: not something nullnet writes
		{"xnullnet:101:service", 0, 0, false},
	}
	for _, tc := range cases {
		id, side, ok := ParseMarker(tc.alias)
		if ok != tc.ok || id != tc.id || side != tc.side {
			t.Errorf("ParseMarker(%q) = %d, %v, %v; want %d, %v, %v", tc.alias, id, side, ok, tc.id, tc.side, tc.ok)
		}
	}
	if Marker(101, SideService) != "nullnet:101:service" {
		t.Errorf("Marker format changed: %q (cleanup of older runs depends on it)", Marker(101, SideService))
	}
}

func TestSide(t *testing.T) {
	if SideService.Peer() != SideProxy || SideProxy.Peer() != SideService {
		t.Error("Peer is not an involution")
	}
	if SideService.Suffix() != "s" || SideProxy.Suffix() != "c" {
		t.Error("suffixes must match upstream's br_N_s / br_N_c")
	}
	if Side(0).Valid() || Side(3).Valid() {
		t.Error("only two sides are valid")
	}
	for _, s := range []Side{SideService, SideProxy} {
		got, err := ParseSide(s.String())
		if err != nil || got != s {
			t.Errorf("ParseSide(%q) = %v, %v", s.String(), got, err)
		}
	}
}

func TestOverlayMTU(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{1500, 1450}, {9000, 8950}, {0, 1450}, {-1, 1450}} {
		if got := OverlayMTU(tc.in); got != tc.want {
			t.Errorf("OverlayMTU(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseName(t *testing.T) {
	cases := []struct {
		name string
		id   uint32
		side Side
		ok   bool
	}{
		{"br_101_s", 101, SideService, true},
		{"vx_101_c", 101, SideProxy, true},
		{"vp_2097151_c", MaxNetID, SideProxy, true},
		{"br_0101_s", 0, 0, false}, // not what NamesFor writes
		{"br_100_s", 0, 0, false},
		{"br_101_x", 0, 0, false},
		{"br_101", 0, 0, false},
		{"eth0", 0, 0, false},
		{"docker0", 0, 0, false},
	}
	for _, tc := range cases {
		id, side, ok := ParseName(tc.name)
		if ok != tc.ok || id != tc.id || side != tc.side {
			t.Errorf("ParseName(%q) = %d, %v, %v; want %d, %v, %v", tc.name, id, side, ok, tc.id, tc.side, tc.ok)
		}
	}
	for _, id := range []uint32{MinNetID, 4242, MaxNetID} {
		for _, s := range []Side{SideService, SideProxy} {
			n := NamesFor(id, s)
			for _, name := range []string{n.Bridge, n.VXLAN, n.Veth} {
				if gid, gs, ok := ParseName(name); !ok || gid != id || gs != s {
					t.Errorf("ParseName(NamesFor(%d, %s)) round trip failed for %q", id, s, name)
				}
			}
		}
	}
}

func TestGroupFor(t *testing.T) {
	seen := map[uint32]string{}
	for _, id := range []uint32{MinNetID, MinNetID + 1, 4242, MaxNetID} {
		for _, s := range []Side{SideService, SideProxy} {
			g := GroupFor(id, s)
			if g>>24 != 0x6e {
				t.Errorf("GroupFor(%d, %s) = %#x: outside nullnet's range", id, s, g)
			}
			key := NamesFor(id, s).Bridge
			if prev, dup := seen[g]; dup {
				t.Errorf("GroupFor collision: %s and %s share %#x", prev, key, g)
			}
			seen[g] = key
		}
	}
}
