package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// testResolver is a small in-test Resolver for the relay tests: services map to local upstream
// sockets, per-client delays simulate a slow server, and every lease is tracked so tests can
// check that each one is released exactly once.
type testResolver struct {
	mu        sync.Mutex
	upstreams map[string]netip.AddrPort
	errs      map[string]error
	delay     map[netip.Addr]time.Duration
	next      int
	open      map[string]bool // lease id -> released?
	doubles   []string        // leases released more than once
	resolves  int
}

func newTestResolver() *testResolver {
	return &testResolver{upstreams: map[string]netip.AddrPort{}, errs: map[string]error{},
		delay: map[netip.Addr]time.Duration{}, open: map[string]bool{}}
}

func (r *testResolver) set(service string, up netip.AddrPort) {
	r.mu.Lock()
	r.upstreams[service] = up
	r.mu.Unlock()
}

func (r *testResolver) fail(service string, err error) {
	r.mu.Lock()
	r.errs[service] = err
	r.mu.Unlock()
}

func (r *testResolver) slow(client netip.Addr, d time.Duration) {
	r.mu.Lock()
	r.delay[client] = d
	r.mu.Unlock()
}

func (r *testResolver) Resolve(ctx context.Context, client netip.Addr, service string, _ Protocol) (Lease, error) {
	r.mu.Lock()
	d := r.delay[client]
	r.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return Lease{}, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resolves++
	if err := r.errs[service]; err != nil {
		return Lease{}, err
	}
	up, ok := r.upstreams[service]
	if !ok {
		return Lease{}, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	r.next++
	id := fmt.Sprintf("lease-%d", r.next)
	r.open[id] = false
	return Lease{Upstream: up, LeaseID: id, ReplicaID: testReplicaID(up)}, nil
}

func (r *testResolver) Release(l Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	released, ok := r.open[l.LeaseID]
	if !ok || released {
		r.doubles = append(r.doubles, l.LeaseID)
		return
	}
	r.open[l.LeaseID] = true
}

// counts returns how many leases were handed out and how many released.
func (r *testResolver) counts() (issued, released int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rel := range r.open {
		issued++
		if rel {
			released++
		}
	}
	return issued, released
}

func (r *testResolver) checkNoDoubleRelease(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.doubles) > 0 {
		t.Errorf("leases released twice or unknown: %v", r.doubles)
	}
}

// testProxy runs a Proxy bound to 127.0.0.1 until the test ends.
type testProxy struct {
	*Proxy
	events *events.Store
	done   chan error
	cancel context.CancelFunc // stops Run (the test's cleanup waits for it)
}

func startProxy(t testing.TB, res Resolver, mod func(*config.Config, *Config)) *testProxy {
	t.Helper()
	acfg := config.Default()
	acfg.NodeName = "proxy-test"
	acfg.Proxy.Enabled = true
	acfg.Proxy.BindAddr = "127.0.0.1"
	acfg.Proxy.HTTPAddr = "127.0.0.1:0"
	acfg.Proxy.HTTPSAddr = "127.0.0.1:0"
	var logger hclog.Logger = hclog.NewNullLogger()
	if _, bench := t.(*testing.B); !bench {
		logger = hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Debug, Output: testWriter{t}})
	}
	store := events.New(1024, logger)
	cfg := Config{Agent: acfg, Events: store, Logger: logger, Resolver: res, BindRetryMin: 50 * time.Millisecond,
		BindRetryMax: 500 * time.Millisecond, DisableHTTP: true}
	if mod != nil {
		mod(acfg, &cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tp := &testProxy{Proxy: p, events: store, done: make(chan error, 1), cancel: cancel}
	go func() { tp.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err, ok := <-tp.done:
			if ok && err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("proxy did not stop within 30s")
		}
	})
	return tp
}

// apply pushes a table as if the server had sent it.
func (tp *testProxy) apply(version uint64, ms ...Mapping) {
	want := map[listenerKey]Mapping{}
	for _, m := range ms {
		want[m.key()] = m
	}
	tp.reconcile(version, want)
}

// listenerState returns the status of one listener ("" if absent).
func (tp *testProxy) listener(proto Protocol, port uint16) (ListenerStatus, bool) {
	for _, l := range tp.status().Listeners {
		if l.Protocol == proto && l.Port == port {
			return l, true
		}
	}
	return ListenerStatus{}, false
}

func (tp *testProxy) waitListening(t testing.TB, proto Protocol, port uint16) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%s/%d listening", proto, port), func() bool {
		l, ok := tp.listener(proto, port)
		return ok && l.State == "listening"
	})
}

func (tp *testProxy) hasEvent(kind string) bool {
	evs, _ := tp.events.Since(0)
	for _, e := range evs {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a port that was free for both TCP and UDP on 127.0.0.1 a moment ago.
func freePort(t testing.TB) uint16 {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

func addrOf(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	return addrPortOf(a)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
