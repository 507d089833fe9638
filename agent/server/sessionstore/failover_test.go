package sessionstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/server/leader"
	"github.com/nullnet/nullnet/agent/server/sessionstore"
)

// The two packages together, as the server will wire them: the store is fenced on the leader
// lock and a new leader loads it in establish. The leader's session is destroyed: its writes are
// refused at once, the other server leads, loads every session and allocates no id twice.
func TestFailoverKeepsState(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	p := prefix(t)
	key := strings.TrimSuffix(p, "/") + "-leader" // beside the prefix, as nullnet/leader is
	type server struct {
		name   string
		l      *leader.Leadership
		store  *sessionstore.Store
		loaded chan sessionstore.State
	}
	var servers []*server
	for _, name := range []string{"a", "b"} {
		sv := &server{name: name, loaded: make(chan sessionstore.State, 4)}
		sv.store = newStore(t, c, p, func(cfg *sessionstore.Config) {
			cfg.Fence = func() (string, string) { return sv.l.Fence() }
		})
		l, err := leader.New(leader.Config{Client: c, Key: key, Name: name,
			Establish: func(ctx context.Context) error {
				st, err := sv.store.Load(ctx)
				if err != nil {
					return err
				}
				sv.loaded <- st
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		sv.l = l
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); l.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		servers = append(servers, sv)
	}
	var first, second *server
	deadline := time.Now().Add(15 * time.Second)
	for first == nil {
		for i, sv := range servers {
			if sv.l.IsLeader() {
				first, second = sv, servers[1-i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	<-first.loaded
	ctx := context.Background()
	held := map[uint32]bool{}
	for i := range 50 {
		r := record(i, 0)
		id, err := first.store.AllocNetID(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		r.NetID, r.Server = id, first.name
		if err := first.store.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		held[id] = true
	}
	_, session := first.l.Fence()
	began := time.Now()
	if _, err := c.Session().Destroy(session, nil); err != nil {
		t.Fatal(err)
	}
	// The deposed leader's next write is refused whether or not it noticed yet.
	if _, err := first.store.AllocNetID(ctx, "late"); !errors.Is(err, sessionstore.ErrNotLeader) {
		t.Fatalf("deposed leader's allocation: %v", err)
	}
	var st sessionstore.State
	select {
	case st = <-second.loaded:
	case <-time.After(leader.DefaultSessionTTL + leader.DefaultLockDelay):
		t.Fatal("the standby did not take over")
	}
	took := time.Since(began)
	if len(st.Records) != 50 || len(st.NetIDs) != 50 || st.Skipped != 0 {
		t.Fatalf("new leader loaded %d records, %d ids, %d skipped; want 50, 50, 0", len(st.Records), len(st.NetIDs), st.Skipped)
	}
	for range 50 {
		id, err := second.store.AllocNetID(ctx, "next")
		if err != nil {
			t.Fatal(err)
		}
		if held[id] {
			t.Fatalf("id %d handed out twice across the failover", id)
		}
	}
	msg := fmt.Sprintf("failover with state: session destroyed -> standby leads with 50 sessions loaded in %s", took.Round(time.Millisecond))
	t.Log(msg)
	fmt.Println(msg)
}
