package proxy

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	metrics "github.com/hashicorp/go-metrics"

	"github.com/nullnet/nullnet/lib/retry"
)

// Sessions live in the server's memory. When the port-table stream comes back after a break the
// proxy cannot tell a restarted server from a network blip, so it re-announces every live TCP
// connection and UDP session with a Proxy call carrying "adopt": a restarted server adopts the
// tunnel the use still runs over (no teardown, no setup), a server that never went away simply
// adds a use to the session it has. Either way the returned lease replaces the use's lease.

// reannounceParallel bounds the Proxy calls in flight during a re-announcement.
const reannounceParallel = 8

// reannounceAttempts bounds the Proxy calls per use in one re-announcement (1s, 2s, 4s apart).
const reannounceAttempts = 4

// Adopter is implemented by resolvers that can re-announce a live use (grpcResolver). Resolvers
// without it (tests, embedding) skip re-announcement.
type Adopter interface {
	// Adopt re-announces a use already relayed to upstream over the tunnel netID and returns
	// the lease that now stands for it.
	Adopt(ctx context.Context, client netip.Addr, service string, proto Protocol, netID uint32,
		upstream netip.AddrPort) (Lease, error)
}

// liveUse is one TCP connection or UDP session with a lease. Its tunnel and upstream never
// change (the connection is bound to them); its lease does, on re-announcement.
type liveUse struct {
	client   netip.Addr
	service  string
	proto    Protocol
	netID    uint32
	upstream netip.AddrPort
	// replica is the replica the use runs to, and closeFn ends the use (its connection or
	// session) when that replica turns critical (unhealthy.go); killed is then set.
	replica string
	closeFn func()
	killed  atomic.Bool

	mu    sync.Mutex
	lease Lease
	ended bool

	// prev and next link the uses of one useKey (guarded by useSet.mu): an intrusive list
	// costs no allocation per use, where a set per key cost a map per client.
	prev, next *liveUse
}

// useKey is what a session is per proxy: a client of a service.
type useKey struct {
	client  netip.Addr
	service string
}

// useSet holds the live uses by client and service: byKey maps a key to the head of its list.
type useSet struct {
	mu    sync.Mutex
	byKey map[useKey]*liveUse
	n     int
}

// resolveUse resolves a new connection or UDP session. When a live use of the same client and
// service exists, the call carries that use's tunnel as adopt: after a server restart the first
// call for the client, whichever it is, then adopts the tunnel the live use runs over (the new
// connection joins it) rather than building a second session and leaving the live use's tunnel
// to be removed. A server that knows the session just reuses it.
func (p *Proxy) resolveUse(ctx context.Context, client netip.Addr, service string, proto Protocol) (Lease, error) {
	if p.shares != nil && p.shares.has(shareKey{client, service, proto}) {
		return p.resolver.Resolve(ctx, client, service, proto) // joins the share: no round trip
	}
	if ad, ok := p.resolver.(Adopter); ok {
		var live *liveUse
		p.uses.mu.Lock()
		live = p.uses.byKey[useKey{client, service}]
		p.uses.mu.Unlock()
		if live != nil {
			return ad.Adopt(ctx, client, service, proto, live.netID, live.upstream)
		}
	}
	return p.resolver.Resolve(ctx, client, service, proto)
}

// startUse registers a resolved use. Its lease belongs to the set from now on: endUse releases
// whichever lease the use holds then, exactly once.
// closeFn ends the use from another goroutine (nil: the use cannot be ended that way).
func (p *Proxy) startUse(client netip.Addr, service string, proto Protocol, l Lease, closeFn func()) *liveUse {
	u := &liveUse{client: client, service: service, proto: proto, netID: l.NetID, upstream: l.Upstream, lease: l,
		replica: l.ReplicaID, closeFn: closeFn}
	k := useKey{client, service}
	p.uses.mu.Lock()
	if p.uses.byKey == nil {
		p.uses.byKey = map[useKey]*liveUse{}
	}
	if head := p.uses.byKey[k]; head != nil {
		u.next, head.prev = head, u
	}
	p.uses.byKey[k] = u
	p.uses.n++
	p.uses.mu.Unlock()
	return u
}

// endUse ends a use and releases its current lease; a second call does nothing.
func (p *Proxy) endUse(u *liveUse) {
	u.mu.Lock()
	if u.ended {
		u.mu.Unlock()
		return
	}
	u.ended = true
	l := u.lease
	u.lease = Lease{}
	u.mu.Unlock()

	p.uses.mu.Lock()
	switch {
	case u.prev != nil:
		u.prev.next = u.next
	case u.next != nil:
		p.uses.byKey[useKey{u.client, u.service}] = u.next
	default:
		delete(p.uses.byKey, useKey{u.client, u.service})
	}
	if u.next != nil {
		u.next.prev = u.prev
	}
	u.prev, u.next = nil, nil
	p.uses.n--
	p.uses.mu.Unlock()
	p.resolver.Release(l)
}

// kickReannounce asks the re-announce loop for a pass; it never blocks (a pass pending covers
// any number of kicks).
func (p *Proxy) kickReannounce() {
	select {
	case p.reannounceKick <- struct{}{}:
	default:
	}
}

// reannounceLoop runs re-announcement passes until ctx ends. Owned by Run.
func (p *Proxy) reannounceLoop(ctx context.Context) {
	ad, ok := p.resolver.(Adopter)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.reannounceKick:
		}
		if ok {
			p.reannounce(ctx, ad)
		}
	}
}

// reannounce re-announces every live use once.
func (p *Proxy) reannounce(ctx context.Context, ad Adopter) {
	p.uses.mu.Lock()
	all := make([]*liveUse, 0, p.uses.n)
	for _, head := range p.uses.byKey {
		for u := head; u != nil; u = u.next {
			all = append(all, u)
		}
	}
	p.uses.mu.Unlock()
	if len(all) == 0 {
		return
	}
	if p.shares != nil {
		// The server may have restarted: its shares' leases may be unknown to it. New uses
		// start new shares (adopting the live tunnel when a live use has one).
		p.shares.ForgetAll()
	}
	p.logger.Info("port table stream reconnected; re-announcing live uses to the server", "uses", len(all))
	sem := make(chan struct{}, reannounceParallel)
	var wg sync.WaitGroup
	var failed, moved int
	var mu sync.Mutex
	for _, u := range all {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ok, same := p.reannounceOne(ctx, ad, u)
			mu.Lock()
			defer mu.Unlock()
			if !ok {
				failed++
			} else if !same {
				moved++
			}
		}()
	}
	wg.Wait()
	metrics.IncrCounter([]string{"nullnet", "proxy", "reannounced"}, float32(len(all)-failed))
	p.logger.Info("live uses re-announced", "uses", len(all), "failed", failed, "other_tunnel", moved)
}

// reannounceOne swaps one use's lease for the one the server returns and releases the old one
// (a restarted server does not know it: the release then fails with NotFound, which is fine).
func (p *Proxy) reannounceOne(ctx context.Context, ad Adopter, u *liveUse) (ok, sameTunnel bool) {
	var l Lease
	var err error
	// A server that just started may not have read the stacks or heard from Consul yet:
	// retry a few times before the use keeps its old lease.
	for attempt, delay := 1, time.Second; ; attempt, delay = attempt+1, 2*delay {
		if l, err = ad.Adopt(ctx, u.client, u.service, u.proto, u.netID, u.upstream); err == nil ||
			attempt == reannounceAttempts || !retry.Sleep(ctx, delay) {
			break
		}
	}
	if err != nil {
		p.logger.Warn("re-announcing a live use failed; it keeps its old lease", "service", u.service,
			"client", u.client, "protocol", u.proto, "error", err)
		return false, false
	}
	u.mu.Lock()
	if u.ended {
		u.mu.Unlock()
		p.resolver.Release(l)
		return true, true
	}
	old := u.lease
	u.lease = l
	u.mu.Unlock()
	if old.LeaseID != l.LeaseID {
		p.resolver.Release(old)
	}
	same := l.NetID == u.netID && l.Upstream == u.upstream
	if !same {
		// The server could not adopt the tunnel: this connection keeps running on the old one
		// until the server removes it; new connections use the new one.
		p.logger.Warn("live use not adopted; it runs on its old tunnel until that is removed", "service", u.service,
			"client", u.client, "net_id", u.netID, "upstream", u.upstream, "new_net_id", l.NetID, "new_upstream", l.Upstream)
	}
	return true, same
}
