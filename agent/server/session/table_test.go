package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCommander records commands; setup can be slowed down or made to fail.
type fakeCommander struct {
	mu         sync.Mutex
	setups     atomic.Int32
	teardowns  []string // "netid:reason"
	setupDelay time.Duration
	setupErr   error
	tdErrs     int // fail this many teardowns first
	gate       chan struct{}
}

func (f *fakeCommander) Setup(ctx context.Context, s Session) (Upstream, error) {
	f.setups.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	time.Sleep(f.setupDelay)
	if f.setupErr != nil {
		return Upstream{}, f.setupErr
	}
	return Upstream{IP: fmt.Sprintf("10.0.0.%d", s.NetID%250), Port: s.Replica.Port}, nil
}

func (f *fakeCommander) Teardown(ctx context.Context, s Session, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tdErrs > 0 {
		f.tdErrs--
		return errors.New("node did not ack")
	}
	f.teardowns = append(f.teardowns, fmt.Sprintf("%d:%s", s.NetID, reason))
	return nil
}

func (f *fakeCommander) teardownList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.teardowns...)
}

func newTable(t *testing.T, f *fakeCommander, min, max uint32) *Table {
	t.Helper()
	tb := New(Config{Commander: f, NetIDs: true, MinNetID: min, MaxNetID: max, RetryMin: 10 * time.Millisecond,
		RetryMax: 20 * time.Millisecond, MetricsDisabled: true})
	t.Cleanup(tb.Close)
	return tb
}

var replicas = []Replica{{ID: "n1/web", Node: "n1", Port: 8080}, {ID: "n2/web", Node: "n2", Port: 8080}}

func req(client string, timeout time.Duration) Request {
	return Request{Key: Key{Service: "web", ClientIP: client, ProxyNode: "p1"}, Timeout: timeout, Candidates: replicas}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAcquireReusesAndCoalesces(t *testing.T) {
	f := &fakeCommander{setupDelay: 50 * time.Millisecond}
	tb := newTable(t, f, 101, 200)
	var wg sync.WaitGroup
	results := make([]Result, 50)
	errs := make([]error, 50)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = tb.Acquire(context.Background(), req("1.2.3.4", 0)) }()
	}
	wg.Wait()
	if n := f.setups.Load(); n != 1 {
		t.Fatalf("setups = %d, want 1", n)
	}
	leases := map[string]bool{}
	created := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if r.Session.ID != results[0].Session.ID {
			t.Fatalf("call %d got session %s, want %s", i, r.Session.ID, results[0].Session.ID)
		}
		if !r.Reused {
			created++
		}
		leases[r.LeaseID] = true
	}
	if created != 1 || len(leases) != 50 {
		t.Fatalf("created=%d distinct leases=%d, want 1 and 50", created, len(leases))
	}
	s, _ := tb.Get(results[0].Session.ID)
	if s.Uses != 50 {
		t.Fatalf("uses = %d, want 50", s.Uses)
	}
}

func TestCoalescedFailureIsShared(t *testing.T) {
	f := &fakeCommander{setupErr: errors.New("ack timeout"), gate: make(chan struct{})}
	tb := newTable(t, f, 101, 101)
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = tb.Acquire(context.Background(), req("1.2.3.4", 0)) }()
	}
	waitFor(t, "setup to start", func() bool { return f.setups.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // let the others queue behind the setup
	close(f.gate)
	wg.Wait()
	for i, err := range errs {
		if err == nil || err.Error() != "ack timeout" {
			t.Fatalf("call %d: err = %v, want the shared setup error", i, err)
		}
	}
	if n := f.setups.Load(); n != 1 {
		t.Fatalf("setups = %d, want 1", n)
	}
	// Rolled back and the only id freed: the next call can use it again.
	waitFor(t, "rollback", func() bool { return tb.Stats().NetIDsInUse == 0 })
	if got := f.teardownList(); len(got) != 1 || got[0] != "101:setup_failed" {
		t.Fatalf("teardowns = %v", got)
	}
}

func TestIdleTimerStartsAtZeroUses(t *testing.T) {
	f := &fakeCommander{}
	tb := newTable(t, f, 101, 200)
	r1, err := tb.Acquire(context.Background(), req("1.2.3.4", 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := tb.Acquire(context.Background(), req("1.2.3.4", 100*time.Millisecond))
	time.Sleep(300 * time.Millisecond) // three timeouts with uses open
	if s, ok := tb.Get(r1.Session.ID); !ok || s.State != StateActive {
		t.Fatalf("session with open uses expired: %+v", s)
	}
	if err := tb.Release(r1.LeaseID, "p1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if s, _ := tb.Get(r1.Session.ID); s.State != StateActive || s.Uses != 1 {
		t.Fatalf("session with one use left: %+v", s)
	}
	if err := tb.Release(r1.LeaseID, "p1"); !errors.Is(err, ErrUnknownLease) {
		t.Fatalf("double release: err = %v", err)
	}
	released := time.Now()
	if err := tb.Release(r2.LeaseID, "p1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "idle teardown", func() bool { _, ok := tb.Get(r1.Session.ID); return !ok })
	if d := time.Since(released); d < 100*time.Millisecond {
		t.Fatalf("torn down %s after the last release, before the timeout", d)
	}
	if got := f.teardownList(); len(got) != 1 || got[0] != "101:idle_timeout" {
		t.Fatalf("teardowns = %v", got)
	}
}

func TestTimeoutZeroNeverExpires(t *testing.T) {
	f := &fakeCommander{}
	tb := newTable(t, f, 101, 200)
	r, _ := tb.Acquire(context.Background(), req("1.2.3.4", 0))
	_ = tb.Release(r.LeaseID, "p1")
	time.Sleep(200 * time.Millisecond)
	if s, ok := tb.Get(r.Session.ID); !ok || s.State != StateActive || s.IdleSince == nil {
		t.Fatalf("session = %+v ok=%v", s, ok)
	}
}

func TestPoolReuseOldestFreedAfterAck(t *testing.T) {
	f := &fakeCommander{tdErrs: 2}
	tb := newTable(t, f, 101, 103)
	var ids []string
	for i := range 3 {
		r, err := tb.Acquire(context.Background(), req(fmt.Sprintf("1.1.1.%d", i), 0))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Session.ID)
	}
	if _, err := tb.Acquire(context.Background(), req("9.9.9.9", 0)); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("4th session: err = %v, want pool exhausted", err)
	}
	// Free 102 then 101; the first teardown attempts fail, so nothing is free until acked.
	if _, err := tb.TearDown(ids[1], ReasonForced); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "102 freed", func() bool { return tb.Stats().NetIDsInUse == 2 })
	if _, err := tb.TearDown(ids[0], ReasonForced); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "101 freed", func() bool { return tb.Stats().NetIDsInUse == 1 })
	r, err := tb.Acquire(context.Background(), req("9.9.9.9", 0))
	if err != nil || r.Session.NetID != 102 {
		t.Fatalf("reuse: id %d err %v, want the oldest freed (102)", r.Session.NetID, err)
	}
	r, err = tb.Acquire(context.Background(), req("9.9.9.8", 0))
	if err != nil || r.Session.NetID != 101 {
		t.Fatalf("reuse: id %d err %v, want 101", r.Session.NetID, err)
	}
}

func TestLeastLoadedReplicaAndTearDownWhere(t *testing.T) {
	f := &fakeCommander{}
	tb := newTable(t, f, 101, 200)
	nodes := map[string]int{}
	for i := range 4 {
		r, err := tb.Acquire(context.Background(), req(fmt.Sprintf("1.1.1.%d", i), 0))
		if err != nil {
			t.Fatal(err)
		}
		nodes[r.Session.Replica.Node]++
	}
	if nodes["n1"] != 2 || nodes["n2"] != 2 {
		t.Fatalf("spread = %v, want 2/2", nodes)
	}
	n := tb.TearDownWhere(func(s Session) bool { return s.Replica.Node == "n1" }, ReasonReplicaGone)
	if n != 2 {
		t.Fatalf("matched %d, want 2", n)
	}
	waitFor(t, "teardowns", func() bool { return len(f.teardownList()) == 2 })
	// n1's sessions are gone; a new client lands on the now least loaded n1 again.
	r, _ := tb.Acquire(context.Background(), req("2.2.2.2", 0))
	if r.Session.Replica.Node != "n1" {
		t.Fatalf("picked %s, want the least loaded n1", r.Session.Replica.Node)
	}
}

func TestReleaseNodeAndDoomedSetup(t *testing.T) {
	f := &fakeCommander{}
	tb := newTable(t, f, 101, 200)
	r, _ := tb.Acquire(context.Background(), req("1.2.3.4", 50*time.Millisecond))
	_, _ = tb.Acquire(context.Background(), req("1.2.3.4", 50*time.Millisecond))
	if n := tb.ReleaseNode("p1"); n != 2 {
		t.Fatalf("released %d, want 2", n)
	}
	waitFor(t, "idle teardown", func() bool { _, ok := tb.Get(r.Session.ID); return !ok })

	f.gate = make(chan struct{})
	done := make(chan error, 1)
	go func() { _, err := tb.Acquire(context.Background(), req("5.5.5.5", 0)); done <- err }()
	waitFor(t, "setup in flight", func() bool { return tb.Stats().Creating == 1 })
	tb.TearDownWhere(func(Session) bool { return true }, ReasonReplicaUnhealthy)
	close(f.gate)
	if err := <-done; !errors.Is(err, ErrTornDownInSetup) {
		t.Fatalf("err = %v, want ErrTornDownInSetup", err)
	}
	waitFor(t, "rollback", func() bool { return tb.Stats().NetIDsInUse == 0 })
}

// A restarted proxy node: the uses taken before the cut-off are released, a use its new process
// took afterwards keeps the session.
func TestReleaseNodeBefore(t *testing.T) {
	tb := newTable(t, &fakeCommander{}, 101, 200)
	r, _ := tb.Acquire(context.Background(), req("1.2.3.4", 50*time.Millisecond))
	_, _ = tb.Acquire(context.Background(), req("1.2.3.4", 50*time.Millisecond))
	cut := time.Now()
	time.Sleep(time.Millisecond)
	if n := tb.ReleaseNodeBefore("p2", time.Now()); n != 0 {
		t.Fatalf("released %d uses of another proxy node", n)
	}
	fresh, _ := tb.Acquire(context.Background(), req("1.2.3.4", 50*time.Millisecond))
	if n := tb.ReleaseNodeBefore("p1", cut); n != 2 {
		t.Fatalf("released %d, want the 2 uses taken before the cut-off", n)
	}
	if s, ok := tb.Get(r.Session.ID); !ok || s.Uses != 1 {
		t.Fatalf("session after the release: %+v %v, want 1 use (the new process's)", s, ok)
	}
	time.Sleep(120 * time.Millisecond) // past the timeout: a session in use stays
	if _, ok := tb.Get(r.Session.ID); !ok {
		t.Fatal("the session of a live use expired")
	}
	if err := tb.Release(fresh.LeaseID, "p1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "idle teardown", func() bool { _, ok := tb.Get(r.Session.ID); return !ok })
}

func TestNoCandidates(t *testing.T) {
	tb := newTable(t, &fakeCommander{}, 101, 200)
	r := req("1.2.3.4", 0)
	r.Candidates = nil
	if _, err := tb.Acquire(context.Background(), r); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("err = %v", err)
	}
}
