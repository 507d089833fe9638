// Package edgepolicy decides, per service, whether the proxy serves a client: allow and deny
// lists of CIDRs, a bound on each client's open connections, a token bucket on each client's
// new connections and a bound on the service's open connections and sessions. It is pure (no
// sockets, no clock of its own): the proxy calls Admit when a client arrives and releases the
// Ticket when the connection, session or request ends.
package edgepolicy

import (
	"cmp"
	"net/netip"
	"slices"
)

// Matcher is a compiled set of CIDRs: merged, sorted address ranges searched by binary search,
// one table per family, so a lookup costs O(log n) comparisons of integers whatever the list
// length (about 10 for 1,000 CIDRs) and no allocation.
type Matcher struct {
	v4 []range4
	v6 []range6
	n  int // prefixes given
}

type range4 struct{ lo, hi uint32 }

// u128 is an IPv6 address as two big-endian halves.
type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int { return cmp.Or(cmp.Compare(a.hi, b.hi), cmp.Compare(a.lo, b.lo)) }

type range6 struct{ lo, hi u128 }

// NewMatcher compiles prefixes; IPv4-mapped IPv6 prefixes (::ffff:a.b.c.d/n, n >= 96) are
// matched as the IPv4 prefix they name, since clients are looked up unmapped.
func NewMatcher(prefixes []netip.Prefix) *Matcher {
	m := &Matcher{n: len(prefixes)}
	for _, p := range prefixes {
		p = p.Masked()
		a := p.Addr()
		if a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			a = p.Addr()
		}
		if a.Is4() {
			lo := be32(a.As4())
			hi := lo | uint32(uint64(1)<<(32-p.Bits())-1)
			m.v4 = append(m.v4, range4{lo, hi})
			continue
		}
		lo := to128(a)
		hi := lo
		host := 128 - p.Bits()
		switch {
		case host >= 64:
			hi.lo = ^uint64(0)
			if host == 128 {
				hi.hi = ^uint64(0)
			} else {
				hi.hi |= uint64(1)<<(host-64) - 1
			}
		case host > 0:
			hi.lo |= uint64(1)<<host - 1
		}
		m.v6 = append(m.v6, range6{lo, hi})
	}
	slices.SortFunc(m.v4, func(a, b range4) int { return cmp.Compare(a.lo, b.lo) })
	m.v4 = merge(m.v4, func(r range4) (uint32, uint32) { return r.lo, r.hi },
		func(a, b uint32) bool { return b <= a || (a != ^uint32(0) && b == a+1) }, func(lo, hi uint32) range4 { return range4{lo, hi} },
		func(a, b uint32) uint32 { return max(a, b) })
	slices.SortFunc(m.v6, func(a, b range6) int { return a.lo.cmp(b.lo) })
	m.v6 = merge(m.v6, func(r range6) (u128, u128) { return r.lo, r.hi },
		func(a, b u128) bool { return b.cmp(a) <= 0 || b == a.next() }, func(lo, hi u128) range6 { return range6{lo, hi} },
		func(a, b u128) u128 {
			if a.cmp(b) >= 0 {
				return a
			}
			return b
		})
	return m
}

// merge joins sorted ranges that overlap or touch (adjacent(hi, lo) reports whether lo starts
// at or before hi+1), so that the ranges left are disjoint and one binary search decides.
func merge[R any, A any](rs []R, get func(R) (A, A), adjacent func(hi, lo A) bool, mk func(lo, hi A) R, maxOf func(a, b A) A) []R {
	if len(rs) == 0 {
		return nil
	}
	out := rs[:1]
	for _, r := range rs[1:] {
		lo, hi := get(r)
		plo, phi := get(out[len(out)-1])
		if adjacent(phi, lo) {
			out[len(out)-1] = mk(plo, maxOf(phi, hi))
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

func (a u128) next() u128 {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func to128(a netip.Addr) u128 {
	b := a.As16()
	var r u128
	for i := range 8 {
		r.hi = r.hi<<8 | uint64(b[i])
		r.lo = r.lo<<8 | uint64(b[8+i])
	}
	return r
}

// Contains reports whether a is in one of the prefixes. IPv4-mapped addresses are looked up as
// IPv4; an invalid address is in no prefix.
func (m *Matcher) Contains(a netip.Addr) bool {
	if m == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	if a.Is4() {
		x := be32(a.As4())
		// The first range starting past x; x is inside the one before it, if any.
		lo, hi := 0, len(m.v4)
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if m.v4[mid].lo <= x {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return lo > 0 && x <= m.v4[lo-1].hi
	}
	x := to128(a)
	lo, hi := 0, len(m.v6)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if m.v6[mid].lo.cmp(x) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo > 0 && x.cmp(m.v6[lo-1].hi) <= 0
}

// Len is the number of prefixes the matcher was built from.
func (m *Matcher) Len() int {
	if m == nil {
		return 0
	}
	return m.n
}
