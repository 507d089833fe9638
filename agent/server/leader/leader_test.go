package leader_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/leader"
)

// A child process that campaigns and never stops on its own: the parent kills it with SIGKILL
// to measure a takeover after a crash (no release, no session destroy).
func TestMain(m *testing.M) {
	if spec := os.Getenv("NULLNET_LEADER_CHILD"); spec != "" {
		addr, rest, _ := strings.Cut(spec, ",")
		key, name, _ := strings.Cut(rest, ",")
		cfg := api.DefaultConfig()
		cfg.Address = addr
		c, err := api.NewClient(cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		l, err := leader.New(leader.Config{Client: c, Key: key, Name: name})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		l.Run(context.Background())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type candidate struct {
	name        string
	l           *leader.Leadership
	cancel      context.CancelFunc
	done        chan struct{}
	established atomic.Int32
	revoked     atomic.Int32
	events      *events.Store
}

func start(t *testing.T, c *api.Client, key, name string, establish ...func(context.Context) error) *candidate {
	t.Helper()
	cd := &candidate{name: name, done: make(chan struct{}), events: events.New(100, nil)}
	l, err := leader.New(leader.Config{
		Client: c, Key: key, Name: name, Address: name + ".test:7400", Events: cd.events,
		RetryMax: time.Second,
		Establish: func(ctx context.Context) error {
			cd.established.Add(1)
			if len(establish) > 0 {
				return establish[0](ctx)
			}
			return nil
		},
		Revoke: func() { cd.revoked.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	cd.l = l
	ctx, cancel := context.WithCancel(context.Background())
	cd.cancel = cancel
	go func() { defer close(cd.done); l.Run(ctx) }()
	t.Cleanup(cd.stop)
	return cd
}

func (cd *candidate) stop() {
	cd.cancel()
	<-cd.done
}

func leaders(cs []*candidate) []*candidate {
	var out []*candidate
	for _, c := range cs {
		if c.l.IsLeader() {
			out = append(out, c)
		}
	}
	return out
}

// waitOne waits until exactly one candidate leads and Consul names it; it returns it.
func waitOne(t *testing.T, c *api.Client, key string, cs []*candidate, within time.Duration) *candidate {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if ls := leaders(cs); len(ls) == 1 {
			in, ok, err := leader.Current(context.Background(), c, key)
			if err == nil && ok && in.Name == ls[0].name {
				return ls[0]
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no single leader among %d candidates after %s", len(cs), within)
	return nil
}

func TestExactlyOneLeader(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			key := fmt.Sprintf("nullnet-test/leader-%d-%d", n, time.Now().UnixNano())
			var cs []*candidate
			for i := range n {
				cs = append(cs, start(t, c, key, fmt.Sprintf("s%d", i)))
			}
			l := waitOne(t, c, key, cs, 15*time.Second)
			// Watch for 2 s: never two leaders, always the same one.
			for range 40 {
				if ls := leaders(cs); len(ls) != 1 || ls[0] != l {
					t.Fatalf("leaders changed: %d", len(ls))
				}
				time.Sleep(50 * time.Millisecond)
			}
			in, ok, err := l.l.Leader(context.Background())
			if err != nil || !ok || in.Name != l.name || in.Address != l.name+".test:7400" {
				t.Fatalf("Leader() = %+v %v %v", in, ok, err)
			}
			if evs, _ := l.events.Since(0); len(evs) == 0 || evs[0].Kind != events.LeaderElected || evs[0].Fields["server"] != l.name {
				t.Fatalf("events of the leader: %+v", evs)
			}
		})
	}
}

func TestFailoverWhenSessionDestroyed(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	key := fmt.Sprintf("nullnet-test/leader-destroy-%d", time.Now().UnixNano())
	cs := []*candidate{start(t, c, key, "a"), start(t, c, key, "b"), start(t, c, key, "c")}
	old := waitOne(t, c, key, cs, 15*time.Second)
	in, _, err := leader.Current(context.Background(), c, key)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := c.Session().Destroy(in.Session, nil); err != nil {
		t.Fatal(err)
	}
	bound := leader.DefaultSessionTTL + leader.DefaultLockDelay
	deadline := began.Add(bound)
	var next *candidate
	for time.Now().Before(deadline) {
		if ls := leaders(cs); len(ls) == 1 && ls[0] != old {
			next = ls[0]
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if next == nil {
		t.Fatalf("no new leader within %s after the session was destroyed", bound)
	}
	took := time.Since(began)
	t.Logf("failover after the leader's session was destroyed: %s (lock-delay %s)", took.Round(time.Millisecond), leader.DefaultLockDelay)
	fmt.Printf("leader failover (session destroyed): %s\n", took.Round(time.Millisecond))
	if old.revoked.Load() != old.established.Load() {
		t.Fatalf("old leader: %d establish, %d revoke", old.established.Load(), old.revoked.Load())
	}
	var lost *events.Event
	evs, _ := old.events.Since(0)
	for i := range evs {
		if evs[i].Kind == events.LeadershipLost {
			lost = &evs[i]
		}
	}
	if lost == nil || lost.Fields["reason"] != leader.ReasonSessionInvalidated {
		t.Fatalf("old leader's leadership_lost: %+v", lost)
	}
	waitOne(t, c, key, cs, 5*time.Second)
}

func TestFailoverAfterKill(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	key := fmt.Sprintf("nullnet-test/leader-kill-%d", time.Now().UnixNano())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "NULLNET_LEADER_CHILD="+srv.HTTPAddr+","+key+",child")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		in, ok, err := leader.Current(context.Background(), c, key)
		if err == nil && ok && in.Name == "child" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child process never led")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b := start(t, c, key, "b")
	time.Sleep(500 * time.Millisecond) // b is campaigning
	if b.l.IsLeader() {
		t.Fatal("b leads while the child holds the lock")
	}
	began := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	bound := leader.DefaultSessionTTL + leader.DefaultLockDelay
	for !b.l.IsLeader() {
		if time.Since(began) > bound {
			t.Fatalf("no takeover within %s after kill -9 of the leader", bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(began)
	t.Logf("failover after kill -9 of the leader: %s (check TTL %s, lock-delay %s)", took.Round(time.Millisecond),
		leader.DefaultCheckTTL, leader.DefaultLockDelay)
	fmt.Printf("leader failover (kill -9): %s\n", took.Round(time.Millisecond))
}

func TestCancelReleasesPromptly(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	key := fmt.Sprintf("nullnet-test/leader-cancel-%d", time.Now().UnixNano())
	cs := []*candidate{start(t, c, key, "a"), start(t, c, key, "b")}
	old := waitOne(t, c, key, cs, 15*time.Second)
	began := time.Now()
	old.stop()
	stopped := time.Since(began)
	if old.revoked.Load() != old.established.Load() {
		t.Fatalf("stopped leader: %d establish, %d revoke", old.established.Load(), old.revoked.Load())
	}
	other := cs[0]
	if other == old {
		other = cs[1]
	}
	for !other.l.IsLeader() {
		if time.Since(began) > 2*time.Second {
			t.Fatalf("the other candidate did not lead within 2s of a clean stop (lock-delay must not apply)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("clean stop: Run returned in %s, the other server led after %s", stopped.Round(time.Millisecond),
		time.Since(began).Round(time.Millisecond))
}

func TestEstablishFailureRevokes(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	key := fmt.Sprintf("nullnet-test/leader-estfail-%d", time.Now().UnixNano())
	var mu sync.Mutex
	fail := 2
	cd := start(t, c, key, "a", func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			return errors.New("restoring state failed")
		}
		return nil
	})
	waitOne(t, c, key, []*candidate{cd}, 20*time.Second)
	if e, r := cd.established.Load(), cd.revoked.Load(); e != 3 || r != 2 {
		t.Fatalf("establish %d, revoke %d; want 3 and 2", e, r)
	}
	n := 0
	evs, _ := cd.events.Since(0)
	for _, e := range evs {
		if e.Kind == events.LeadershipLost && e.Fields["reason"] == leader.ReasonEstablishFailed {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d establish_failed events, want 2", n)
	}
}

// A lock lost while establish still runs (a slow restore) ends establish's context at once.
func TestLossDuringEstablishCancelsIt(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	key := fmt.Sprintf("nullnet-test/leader-slowest-%d", time.Now().UnixNano())
	started := make(chan struct{}, 4)
	ended := make(chan time.Time, 4)
	var once sync.Once
	cd := start(t, c, key, "a", func(ctx context.Context) error {
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil
		}
		started <- struct{}{}
		<-ctx.Done()
		ended <- time.Now()
		return ctx.Err()
	})
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("establish never started")
	}
	if cd.l.IsLeader() {
		t.Fatal("IsLeader before establish returned")
	}
	in, ok, err := leader.Current(context.Background(), c, key)
	if err != nil || !ok {
		t.Fatalf("Current: %v %v", ok, err)
	}
	began := time.Now()
	if _, err := c.Session().Destroy(in.Session, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-ended:
		t.Logf("establish cancelled %s after the session was destroyed", at.Sub(began).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("establish kept running after the lock was lost")
	}
	waitOne(t, c, key, []*candidate{cd}, 10*time.Second) // it campaigns again and leads
	evs, _ := cd.events.Since(0)
	var reasons []string
	for _, e := range evs {
		if e.Kind == events.LeadershipLost {
			reasons = append(reasons, e.Fields["reason"])
		}
	}
	if len(reasons) != 1 || reasons[0] != leader.ReasonSessionInvalidated {
		t.Fatalf("leadership_lost reasons %v, want [%s]", reasons, leader.ReasonSessionInvalidated)
	}
	if e, r := cd.established.Load(), cd.revoked.Load(); e != 2 || r != 1 {
		t.Fatalf("establish %d revoke %d, want 2 and 1", e, r)
	}
}
