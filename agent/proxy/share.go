package proxy

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
)

// Use sharing. Every TCP connection, UDP session and HTTP request needs a use of the client's
// session on the server, and asking for one costs a Proxy round trip and, at the end, a
// ReleaseProxy. Per (client, service) the proxy therefore holds one server lease while any of
// its local uses is open, and a short linger after the last one ends: a client opening many
// short connections pays the round trips once. The server still sees a use for as long as the
// client has something open, so its idle timeout is unchanged, only shifted by the linger.

// shareKey is a share's identity: the session's key on the server, minus the proxy node.
type shareKey struct {
	client  netip.Addr
	service string
	proto   Protocol
}

// share is one server lease held for the local uses of a key.
type share struct {
	key   shareKey
	ready chan struct{} // closed when the first Resolve returned
	lease Lease         // the server's lease, valid after ready
	err   error         // the first Resolve's error, valid after ready
	refs  int           // local uses; guarded by sharedResolver.mu
	dead  bool          // no new uses join (released when refs reaches 0)
	timer *time.Timer   // the linger, while refs == 0
}

// sharedResolver wraps a Resolver (the gRPC one) with use sharing. It passes Adopt through:
// a re-announced use gets a lease of its own, and its share then only releases the old one.
type sharedResolver struct {
	inner  Resolver
	linger atomic.Int64 // time.Duration: proxy.use_linger, reloadable; <= 0 turns sharing off
	logger hclog.Logger

	mu     sync.Mutex
	shares map[shareKey]*share

	// Joins are counted here and handed to go-metrics at most once a second (a labelled
	// metric call per connection costs more than the join itself).
	joined, joinedFlushed atomic.Uint64
	lastFlush             atomic.Int64 // unix nanoseconds
}

// countJoin counts one use that joined a share, and reports the count now and then.
func (r *sharedResolver) countJoin() {
	r.joined.Add(1)
	now := time.Now().UnixNano()
	last := r.lastFlush.Load()
	if now-last < int64(time.Second) || !r.lastFlush.CompareAndSwap(last, now) {
		return
	}
	r.flushJoins()
}

// flushJoins reports the joins counted since the last report (also when a share is dropped,
// so that a quiet proxy's count is not left behind).
func (r *sharedResolver) flushJoins() {
	n := r.joined.Load()
	if d := n - r.joinedFlushed.Swap(n); d > 0 {
		metrics.IncrCounter([]string{"nullnet", "proxy", "use", "shared"}, float32(d))
	}
}

func newSharedResolver(inner Resolver, linger time.Duration, logger hclog.Logger) *sharedResolver {
	r := &sharedResolver{inner: inner, logger: logger, shares: map[shareKey]*share{}}
	r.setLinger(linger)
	return r
}

// setLinger applies a (reloaded) proxy.use_linger. 0 turns sharing off for new uses; shares
// already held end with their last use.
func (r *sharedResolver) setLinger(d time.Duration) { r.linger.Store(int64(d)) }

func (r *sharedResolver) on() bool { return r.linger.Load() > 0 }

// Resolve joins the key's share, or starts one with the inner Resolve. Callers arriving while
// that call runs wait for it and share its result; an error is returned to all of them and
// not kept. With sharing off every call is passed through and gets a lease of its own.
func (r *sharedResolver) Resolve(ctx context.Context, client netip.Addr, service string, proto Protocol) (Lease, error) {
	if !r.on() {
		return r.inner.Resolve(ctx, client, service, proto)
	}
	k := shareKey{client, service, proto}
	r.mu.Lock()
	s := r.shares[k]
	if s == nil {
		s = &share{key: k, ready: make(chan struct{})}
		r.shares[k] = s
		s.refs++
		r.mu.Unlock()
		s.lease, s.err = r.inner.Resolve(ctx, client, service, proto)
		close(s.ready)
		if s.err != nil {
			r.mu.Lock()
			s.refs--
			r.dropLocked(s)
			r.mu.Unlock()
			return Lease{}, s.err
		}
		metrics.SetGauge([]string{"nullnet", "proxy", "shares"}, float32(r.count()))
		l := s.lease
		l.share = s
		return l, nil
	}
	s.refs++
	if s.timer != nil {
		s.timer.Stop() // revived during the linger
		s.timer = nil
	}
	r.mu.Unlock()
	select {
	case <-s.ready:
	case <-ctx.Done():
		r.unref(s)
		return Lease{}, ctx.Err()
	}
	if s.err != nil {
		r.unref(s)
		return Lease{}, s.err
	}
	r.countJoin()
	l := s.lease
	l.share, l.Reused = s, true
	return l, nil
}

// Release ends one use of a share (the server lease goes after the linger), or releases a
// lease of its own.
func (r *sharedResolver) Release(l Lease) {
	if l.share == nil {
		r.inner.Release(l)
		return
	}
	r.unref(l.share)
}

// Adopt re-announces one use with a lease of its own (see adopt.go).
func (r *sharedResolver) Adopt(ctx context.Context, client netip.Addr, service string, proto Protocol, netID uint32,
	upstream netip.AddrPort) (Lease, error) {
	ad, ok := r.inner.(Adopter)
	if !ok {
		return Lease{}, errNoAdopter
	}
	return ad.Adopt(ctx, client, service, proto, netID, upstream)
}

// Forget stops l's share from taking new uses: its upstream failed, or the server may have
// replaced the session. Its lease is released when its last use ends.
func (r *sharedResolver) Forget(l Lease) {
	if l.share == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l.share.dead = true
	if r.shares[l.share.key] == l.share {
		delete(r.shares, l.share.key)
	}
}

// ForgetAll does Forget for every share (the port-table stream reconnected: the server may
// have restarted and the shares' leases may be unknown to it).
func (r *sharedResolver) ForgetAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, s := range r.shares {
		s.dead = true
		delete(r.shares, k)
	}
}

func (r *sharedResolver) unref(s *share) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	linger := time.Duration(r.linger.Load())
	if s.dead || linger <= 0 {
		r.dropLocked(s)
		return
	}
	s.timer = time.AfterFunc(linger, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if s.refs == 0 && s.timer != nil {
			r.dropLocked(s)
		}
	})
}

// dropLocked removes a share without uses and releases its server lease.
func (r *sharedResolver) dropLocked(s *share) {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if r.shares[s.key] == s {
		delete(r.shares, s.key)
	}
	if s.err == nil && s.refs == 0 {
		r.inner.Release(s.lease)
	}
	metrics.SetGauge([]string{"nullnet", "proxy", "shares"}, float32(len(r.shares)))
	r.flushJoins()
}

// has reports whether k has a share new uses can join.
func (r *sharedResolver) has(k shareKey) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shares[k]
	return s != nil && !s.dead
}

func (r *sharedResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.shares)
}

// Close releases every share at once (shutdown: lingers are not waited for).
func (r *sharedResolver) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.shares {
		s.dead = true
		if s.refs == 0 {
			r.dropLocked(s)
		}
	}
}
