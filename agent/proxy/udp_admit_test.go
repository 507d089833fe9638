package proxy

import (
	"net/netip"
	"testing"
	"time"
)

func TestPrefixOf(t *testing.T) {
	same := [][2]string{{"203.0.113.1", "203.0.113.254"}, {"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"}}
	differ := [][2]string{{"203.0.113.1", "203.0.114.1"}, {"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"0.0.0.1", "::1"}} // same bits, different families
	for _, c := range same {
		if prefixOf(netip.MustParseAddr(c[0])) != prefixOf(netip.MustParseAddr(c[1])) {
			t.Errorf("%s and %s should share a prefix", c[0], c[1])
		}
	}
	for _, c := range differ {
		if prefixOf(netip.MustParseAddr(c[0])) == prefixOf(netip.MustParseAddr(c[1])) {
			t.Errorf("%s and %s should not share a prefix", c[0], c[1])
		}
	}
}

// TestAdmission: the listener's rate bounds everyone, the prefix rate bounds one /24, a refusal
// by one limit takes no token from the other, tokens come back with time, and prune forgets
// refilled prefixes.
func TestAdmission(t *testing.T) {
	const sec = int64(time.Second)
	now := int64(5000 * sec)
	var a admission
	addr := func(s string) netip.Addr { return netip.MustParseAddr(s) }

	// Prefix limit 3 within a listener limit of 10.
	for i := range 3 {
		if ok, _ := a.admit(now, addr("198.51.100.1"), 10, 3); !ok {
			t.Fatalf("session %d of the /24 refused", i)
		}
	}
	if ok, reason := a.admit(now, addr("198.51.100.77"), 10, 3); ok || reason != dropPrefixRate {
		t.Fatalf("4th session of the /24: ok=%v reason=%s, want prefix_rate", ok, dropNames[reason])
	}
	if a.listener.Tokens != 7 {
		t.Fatalf("a prefix refusal took a listener token: %v left", a.listener.Tokens)
	}
	// Other prefixes use the remaining listener tokens, then the listener refuses.
	for i := range 7 {
		if ok, _ := a.admit(now, netip.AddrFrom4([4]byte{192, 0, byte(i), 1}), 10, 3); !ok {
			t.Fatalf("session from prefix %d refused", i)
		}
	}
	if ok, reason := a.admit(now, addr("192.0.99.1"), 10, 3); ok || reason != dropNewSessionRate {
		t.Fatalf("11th session: ok=%v reason=%s, want new_session_rate", ok, dropNames[reason])
	}
	if _, tracked := a.prefixes[prefixOf(addr("192.0.99.1"))]; tracked {
		t.Fatalf("a prefix refused by the listener's limit was added to the table")
	}
	// 100 ms later one listener token is back.
	if ok, _ := a.admit(now+sec/10, addr("192.0.99.1"), 10, 3); !ok {
		t.Fatalf("no token after 100 ms")
	}
	// Rates of 0 are no limit.
	var free admission
	for range 1000 {
		if ok, _ := free.admit(now, addr("192.0.2.1"), 0, 0); !ok {
			t.Fatal("refused with no limits")
		}
	}
	// prune: every prefix refilled after a second is forgotten.
	if len(a.prefixes) == 0 {
		t.Fatal("no prefixes tracked")
	}
	a.prune(now+2*sec, 3)
	if len(a.prefixes) != 0 {
		t.Fatalf("%d prefixes kept after they refilled", len(a.prefixes))
	}
}

// TestAdmissionPrefixTableBound: past maxPrefixBuckets, new prefixes are limited by the
// listener's bucket only and the table does not grow.
func TestAdmissionPrefixTableBound(t *testing.T) {
	var a admission
	now := int64(time.Hour)
	for i := range maxPrefixBuckets + 1000 {
		ip := netip.AddrFrom4([4]byte{byte(i >> 16), byte(i >> 8), byte(i), 1}) // one /24 each
		if ok, _ := a.admit(now, ip, 0, 5); !ok {
			t.Fatalf("prefix %d refused", i)
		}
	}
	if len(a.prefixes) != maxPrefixBuckets {
		t.Fatalf("prefix table holds %d, want the bound %d", len(a.prefixes), maxPrefixBuckets)
	}
}
