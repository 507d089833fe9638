package proxy

import (
	"net/netip"
	"time"

	"github.com/nullnet/nullnet/agent/edgepolicy"
)

// New-session admission. Creating a UDP session costs a Proxy call to the server, a socket and
// a resolver's time, while a datagram of an established session costs a map lookup and a
// send; a flood of new source addresses must therefore not be able to take the listener's time
// from established flows. New sessions are admitted through token buckets, one per listener
// and one per source prefix (/24 for IPv4, /64 for IPv6, so one network cannot take the whole
// listener's rate), and refused datagrams are dropped and counted before any allocation.

// maxPrefixBuckets bounds the per-prefix table of one listener (about 40 B an entry). When it
// is full, prefixes not in it are limited by the listener's bucket only; the sweep removes
// buckets that have refilled, so a flood's prefixes leave the table a second after it ends.
const maxPrefixBuckets = 1 << 16

// maxResolveQueue bounds the sessions of one listener waiting for a resolver. A server that
// answers slowly must not make the queue (and its held datagrams) grow without bound: past it
// new sessions are refused first, and established sessions are untouched.
const maxResolveQueue = 4096

// maxResolveWait bounds how long a new session waits in the queue for a resolver. Resolving
// can be slow (the server builds a tunnel per client address: about ten a second on a small
// host), so a flood admitted at udp_new_session_rate leaves a backlog of minutes, and a client
// arriving after the flood would wait behind all of it (the e2e flood scenario measured more
// than 10 s). A session still waiting past this bound is dropped when its turn comes, without
// a call to the server: a real client has retried by then and its retry queues afresh. A var so
// that tests can shorten it.
var maxResolveWait = 2 * time.Second

// prefixKey is a source's /24 (IPv4) or /64 (IPv6).
type prefixKey struct {
	hi uint64
	v6 bool
}

func prefixOf(a netip.Addr) prefixKey {
	if a.Is4() {
		b := a.As4()
		return prefixKey{hi: uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2])}
	}
	b := a.As16()
	var hi uint64
	for _, x := range b[:8] {
		hi = hi<<8 | uint64(x)
	}
	return prefixKey{hi: hi, v6: true}
}

// admission is a listener's pair of limits; the listener's mu guards it.
type admission struct {
	listener edgepolicy.Bucket
	prefixes map[prefixKey]edgepolicy.Bucket
}

// admit reports whether a new session from addr may start now, taking a token from both the
// listener's bucket and its prefix's, or the drop reason. A rate of 0 means no limit. The
// listener's bucket is checked first: under a flood most datagrams are refused there, at the
// cost of one refill, without touching the prefix table.
func (a *admission) admit(now int64, addr netip.Addr, rate, perPrefix int) (bool, int) {
	if rate > 0 {
		a.listener.Refill(now, float64(rate), float64(rate))
		if a.listener.Tokens < 1 {
			return false, dropNewSessionRate
		}
	}
	if perPrefix > 0 {
		if a.prefixes == nil {
			a.prefixes = map[prefixKey]edgepolicy.Bucket{}
		}
		key := prefixOf(addr)
		pb, ok := a.prefixes[key]
		if ok || len(a.prefixes) < maxPrefixBuckets { // else: the listener's bucket only
			pb.Refill(now, float64(perPrefix), float64(perPrefix))
			if pb.Tokens < 1 {
				return false, dropPrefixRate // pb unchanged: refill is recomputed next time
			}
			pb.Tokens--
			a.prefixes[key] = pb
		}
	}
	if rate > 0 {
		a.listener.Tokens--
	}
	return true, 0
}

// prune forgets the prefixes whose bucket has refilled: they are as good as new.
func (a *admission) prune(now int64, perPrefix int) {
	for k, b := range a.prefixes {
		b.Refill(now, float64(perPrefix), float64(perPrefix))
		if perPrefix <= 0 || b.Tokens >= float64(perPrefix) {
			delete(a.prefixes, k)
		}
	}
}
