package sessionstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/server/session"
	"github.com/nullnet/nullnet/agent/server/sessionstore"
)

func newStore(t testing.TB, c *api.Client, prefix string, mod func(*sessionstore.Config)) *sessionstore.Store {
	t.Helper()
	cfg := sessionstore.Config{Client: c, Prefix: prefix, NetIDMin: 1, NetIDMax: 100000}
	if mod != nil {
		mod(&cfg)
	}
	s, err := sessionstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func prefix(t testing.TB) string {
	return fmt.Sprintf("nullnet-test/%s-%d/", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano())
}

func record(i int, netID uint32) sessionstore.Record {
	idle := time.Unix(1_800_000_000+int64(i), 0).UTC()
	return sessionstore.Record{
		Session: session.Session{
			ID:      fmt.Sprintf("s-%06d", i),
			Key:     session.Key{Service: "web", ClientIP: fmt.Sprintf("198.51.100.%d", i%250+1), ProxyNode: "proxy-1"},
			NetID:   netID,
			Replica: session.Replica{ID: "node-2/web-1", Node: "node-2", Address: "10.0.0.2", Port: 8080},
			State:   session.StateActive, Created: time.Unix(1_700_000_000, 0).UTC(),
			Uses: i % 3, Timeout: 30 * time.Second,
		},
		ProxyEnd:     sessionstore.End{Node: "proxy-1", State: "up"},
		ServiceEnd:   sessionstore.End{Node: "node-2", State: "up"},
		IdleDeadline: &idle,
		Server:       "server-a",
	}
}

// Two store instances (two servers) allocate concurrently against one Consul without ever
// seeing each other's local view: Consul's create-only writes keep every id unique.
func TestConcurrentAllocatorsNeverShareAnID(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	p := prefix(t)
	stores := []*sessionstore.Store{newStore(t, c, p, nil), newStore(t, c, p, nil)}
	const perStore, workers = 500, 25
	var mu sync.Mutex
	got := map[uint32]string{}
	var wg sync.WaitGroup
	began := time.Now()
	for si, s := range stores {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perStore / workers {
					owner := fmt.Sprintf("st%d-w%d-%d", si, w, i)
					id, err := s.AllocNetID(context.Background(), owner)
					if err != nil {
						t.Errorf("alloc: %v", err)
						return
					}
					mu.Lock()
					if prev, dup := got[id]; dup {
						t.Errorf("net id %d handed out twice: %s and %s", id, prev, owner)
					}
					got[id] = owner
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	took := time.Since(began)
	if len(got) != 2*perStore {
		t.Fatalf("%d distinct ids, want %d", len(got), 2*perStore)
	}
	st, err := newStore(t, c, p, nil).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.NetIDs) != len(got) {
		t.Fatalf("KV holds %d net ids, want %d", len(st.NetIDs), len(got))
	}
	for id, owner := range got {
		if st.NetIDs[id] != owner {
			t.Fatalf("KV says net id %d belongs to %q, the allocator returned it to %q", id, st.NetIDs[id], owner)
		}
	}
	a, b := stores[0].Stats(), stores[1].Stats()
	msg := fmt.Sprintf("%d allocations by 2 stores in %s: %.0f allocations/s; %d txns, %d KV ops, %d CAS conflicts retried",
		len(got), took.Round(time.Millisecond), float64(len(got))/took.Seconds(), a.Txns+b.Txns, a.Ops+b.Ops, a.Conflicts+b.Conflicts)
	t.Log(msg)
	fmt.Println(msg)
}

func TestLoadAfterCrash(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	p := prefix(t)
	ctx := context.Background()
	a := newStore(t, c, p, nil)
	want := map[string]sessionstore.Record{}
	ids := map[uint32]string{}
	for i := range 120 {
		r := record(i, 0)
		id, err := a.AllocNetID(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		r.NetID = id
		ids[id] = r.ID
		if err := a.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = r
	}
	// Twenty sessions end: record deleted, id freed.
	for i := range 20 {
		r := want[fmt.Sprintf("s-%06d", i)]
		if err := a.Delete(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		if err := a.FreeNetID(ctx, r.NetID); err != nil {
			t.Fatal(err)
		}
		delete(want, r.ID)
		delete(ids, r.NetID)
	}
	// "Crash": a new instance (a new leader) knows nothing but Consul.
	b := newStore(t, c, p, nil)
	st, err := b.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Records) != len(want) || len(st.NetIDs) != len(ids) || st.Skipped != 0 {
		t.Fatalf("loaded %d records, %d ids, %d skipped; want %d, %d", len(st.Records), len(st.NetIDs), st.Skipped, len(want), len(ids))
	}
	for _, r := range st.Records {
		w := want[r.ID]
		if r.NetID != w.NetID || r.Key != w.Key || r.Replica != w.Replica || r.ProxyEnd != w.ProxyEnd ||
			r.Uses != w.Uses || r.Timeout != w.Timeout || !r.IdleDeadline.Equal(*w.IdleDeadline) || ids[r.NetID] != r.ID {
			t.Fatalf("loaded %+v\nwant %+v", r, w)
		}
	}
	// The new leader's allocations avoid every id the old one holds, without a single conflict.
	for range 50 {
		id, err := b.AllocNetID(ctx, "new")
		if err != nil {
			t.Fatal(err)
		}
		if _, held := ids[id]; held {
			t.Fatalf("new leader reallocated held id %d", id)
		}
	}
	if s := b.Stats(); s.Conflicts != 0 {
		t.Fatalf("%d conflicts after Load", s.Conflicts)
	}
}

func TestDeniedWriteIsClear(t *testing.T) {
	srv := consultest.StartWith(t, consultest.Options{ACL: true})
	mgmt := srv.Client(t)
	p := prefix(t)
	token := func(rules string) *api.Client {
		pol, _, err := mgmt.ACL().PolicyCreate(&api.ACLPolicy{Name: fmt.Sprintf("p-%d", time.Now().UnixNano()), Rules: rules}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := mgmt.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := srv.Config()
		cfg.Token = tok.SecretID
		c, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	ro := newStore(t, token(fmt.Sprintf(`key_prefix %q { policy = "read" }`, p)), p, nil)
	_, err := ro.AllocNetID(ctx, "s-1")
	if !errors.Is(err, sessionstore.ErrDenied) || !strings.Contains(err.Error(), p+"netids/") {
		t.Fatalf("alloc with a read-only token: %v", err)
	}
	t.Logf("denied allocation: %v", err)
	if err := ro.Put(ctx, record(1, 7)); !errors.Is(err, sessionstore.ErrDenied) {
		t.Fatalf("put with a read-only token: %v", err)
	}
	// The id the denied allocation tried is not lost: the store retries it.
	rw := newStore(t, token(fmt.Sprintf(`key_prefix %q { policy = "write" }`, p)), p, nil)
	if id, err := rw.AllocNetID(ctx, "s-1"); err != nil || id != 1 {
		t.Fatalf("alloc with the documented policy: %d %v", id, err)
	}
	if _, err := ro.AllocNetID(ctx, "s-2"); !errors.Is(err, sessionstore.ErrDenied) {
		t.Fatalf("second denied alloc: %v", err)
	}
	st, err := rw.Load(ctx)
	if err != nil || len(st.NetIDs) != 1 {
		t.Fatalf("after denied writes KV holds %v (%v); want only id 1", st.NetIDs, err)
	}
}

// A store fenced on a lock it does not hold writes nothing.
func TestFenceRefusesADeposedLeader(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	p := prefix(t)
	lockKey := strings.TrimSuffix(p, "/") + "-leader"
	sid, _, err := c.Session().Create(&api.SessionEntry{TTL: "10s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fenceSession = sid
	var mu sync.Mutex
	s := newStore(t, c, p, func(cfg *sessionstore.Config) {
		cfg.Fence = func() (string, string) { mu.Lock(); defer mu.Unlock(); return lockKey, fenceSession }
	})
	ctx := context.Background()
	if ok, _, err := c.KV().Acquire(&api.KVPair{Key: lockKey, Session: sid}, nil); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if _, err := s.AllocNetID(ctx, "s-1"); err != nil {
		t.Fatalf("alloc while holding the lock: %v", err)
	}
	if _, err := c.Session().Destroy(sid, nil); err != nil {
		t.Fatal(err)
	}
	_, err = s.AllocNetID(ctx, "s-2")
	if !errors.Is(err, sessionstore.ErrNotLeader) {
		t.Fatalf("alloc after losing the lock: %v", err)
	}
	t.Logf("deposed leader's write: %v", err)
	if err := s.Put(ctx, record(2, 2)); !errors.Is(err, sessionstore.ErrNotLeader) {
		t.Fatalf("put after losing the lock: %v", err)
	}
}

// The write cost of new sessions: each is an allocation and a record (two KV operations), by
// many concurrent callers, batched into transactions; then the same without batching.
func TestBatchedWriteRate(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	run := func(name string, n, workers int, mod func(*sessionstore.Config)) {
		s := newStore(t, c, prefix(t), mod)
		var wg sync.WaitGroup
		began := time.Now()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					r := record(i, 0)
					id, err := s.AllocNetID(context.Background(), r.ID)
					if err != nil {
						t.Error(err)
						return
					}
					r.NetID = id
					if err := s.Put(context.Background(), r); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(began)
		st := s.Stats()
		msg := fmt.Sprintf("%s: %d sessions (alloc+record) by %d callers in %s: %.0f sessions/s; %d txns (%.0f txn/s), %d KV ops, %.1f ops/txn",
			name, n, workers, took.Round(time.Millisecond), float64(n)/took.Seconds(), st.Txns, float64(st.Txns)/took.Seconds(),
			st.Ops, float64(st.Ops)/float64(st.Txns))
		t.Log(msg)
		fmt.Println(msg)
	}
	b, _ := json.Marshal(record(1, 101))
	fmt.Printf("one session in KV: record %d bytes + net id key (value = session id, %d bytes)\n", len(b), len("s-000001"))
	run("batched (64 ops, 10 ms)", 3000, 200, nil)
	run("unbatched (1 op per txn)", 600, 200, func(cfg *sessionstore.Config) { cfg.MaxOps = 1 })
}
