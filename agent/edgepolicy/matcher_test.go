package edgepolicy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/nullnet/nullnet/config"
	"testing"
)

func mustPrefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	ps, err := config.ParsePrefixes(ss)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestMatcher(t *testing.T) {
	m := NewMatcher(mustPrefixes(t, "10.0.0.0/8", "192.0.2.7", "203.0.113.0/25", "203.0.113.128/25",
		"2001:db8::/32", "::1", "fd00::/8", "0.0.0.0/32"))
	tests := []struct {
		addr string
		want bool
	}{
		{"10.0.0.0", true}, {"10.255.255.255", true}, {"11.0.0.0", false}, {"9.255.255.255", false},
		{"192.0.2.7", true}, {"192.0.2.8", false}, {"192.0.2.6", false},
		{"203.0.113.0", true}, {"203.0.113.255", true}, {"203.0.114.0", false},
		{"::ffff:10.1.2.3", true}, {"::ffff:11.1.2.3", false},
		{"2001:db8::1", true}, {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"2001:db9::", false},
		{"::1", true}, {"::2", false}, {"::", false}, {"fdff::1", true}, {"fe00::", false},
		{"0.0.0.0", true}, {"0.0.0.1", false},
	}
	for _, tc := range tests {
		if got := m.Contains(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Contains(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if m.Contains(netip.Addr{}) {
		t.Error("invalid address matched")
	}
	var nilM *Matcher
	if nilM.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("nil matcher matched")
	}
	all := NewMatcher(mustPrefixes(t, "0.0.0.0/0", "::/0"))
	for _, a := range []string{"0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::1"} {
		if !all.Contains(netip.MustParseAddr(a)) {
			t.Errorf("/0 does not contain %s", a)
		}
	}
	// The merged ranges of adjacent halves are one range.
	if len(m.v4) != 4 {
		t.Errorf("v4 ranges = %v, want 4 (the /25 halves merged)", m.v4)
	}
}

// TestMatcherRandom compares the matcher with a linear scan of netip.Prefix.Contains.
func TestMatcherRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		var ps []netip.Prefix
		for range 1 + rng.IntN(300) {
			ps = append(ps, randPrefix(rng))
		}
		m := NewMatcher(ps)
		for range 2000 {
			a := randAddr(rng)
			if rng.IntN(3) == 0 { // near a prefix's edges
				p := ps[rng.IntN(len(ps))]
				a = p.Addr()
				if rng.IntN(2) == 0 {
					a = a.Prev()
				}
				if !a.IsValid() {
					continue
				}
			}
			want := false
			for _, p := range ps {
				if p.Contains(a) {
					want = true
					break
				}
			}
			if got := m.Contains(a); got != want {
				t.Fatalf("round %d: Contains(%s) = %v, want %v (prefixes %v)", round, a, got, want, ps)
			}
		}
	}
}

func randAddr(rng *rand.Rand) netip.Addr {
	if rng.IntN(2) == 0 {
		return netip.AddrFrom4([4]byte{byte(rng.IntN(4)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	var b [16]byte
	b[0] = byte(rng.IntN(4))
	for i := 1; i < 16; i++ {
		b[i] = byte(rng.Uint32())
	}
	return netip.AddrFrom16(b)
}

func randPrefix(rng *rand.Rand) netip.Prefix {
	a := randAddr(rng)
	p, _ := a.Prefix(rng.IntN(a.BitLen() + 1))
	return p
}

// BenchmarkMatcher: one lookup in lists of 10 to 10,000 CIDRs (every other /24 or /48, so that
// none merge), the client's range last.
func BenchmarkMatcher(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		ps := make([]netip.Prefix, 0, n)
		for i := range n - 1 {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 7), byte(i << 1), 0}), 24))
		}
		ps = append(ps, netip.MustParsePrefix("198.51.100.0/24"))
		m := NewMatcher(ps)
		if len(m.v4) != n {
			b.Fatalf("%d ranges for %d prefixes", len(m.v4), n)
		}
		a := netip.MustParseAddr("198.51.100.7")
		b.Run(fmt.Sprintf("v4/%d", n), func(b *testing.B) {
			for b.Loop() {
				if !m.Contains(a) {
					b.Fatal("miss")
				}
			}
		})
		ps6 := make([]netip.Prefix, 0, n)
		for i := range n - 1 {
			ps6 = append(ps6, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 7), byte(i << 1)}), 48))
		}
		ps6 = append(ps6, netip.MustParsePrefix("2001:db9::/32"))
		m6 := NewMatcher(ps6)
		a6 := netip.MustParseAddr("2001:db9::7")
		b.Run(fmt.Sprintf("v6/%d", n), func(b *testing.B) {
			for b.Loop() {
				if !m6.Contains(a6) {
					b.Fatal("miss")
				}
			}
		})
	}
}
