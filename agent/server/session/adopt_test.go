package session

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// Adopt takes over a reserved id without a setup, opens one use, and from then on the session
// lives like any other: reuse, idle timeout, teardown that frees the id.
func TestAdopt(t *testing.T) {
	f := &fakeCommander{}
	tb := newTable(t, f, 101, 200)
	key := Key{Service: "web", ClientIP: "203.0.113.7", ProxyNode: "p1"}
	ar := AdoptRequest{Key: key, Timeout: 50 * time.Millisecond, Replica: replicas[0], NetID: 150,
		Upstream: Upstream{IP: "10.0.1.42", Port: 8080}}

	if _, err := tb.Adopt(ar); err == nil {
		t.Fatal("adopting an id that is not reserved succeeded")
	}
	if !tb.ReserveNetID(150) {
		t.Fatal("reserving 150")
	}
	res, err := tb.Adopt(ar)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Session
	if s.State != StateActive || s.Uses != 1 || s.NetID != 150 || s.UpstreamIP != "10.0.1.42" || res.LeaseID == "" {
		t.Fatalf("adopted %+v", res)
	}
	if f.setups.Load() != 0 {
		t.Fatal("adoption ran a setup")
	}
	if got, ok := tb.Lookup(key); !ok || got.ID != s.ID {
		t.Fatalf("Lookup: %+v %v", got, ok)
	}
	if _, err := tb.Adopt(ar); !errors.Is(err, ErrSessionExists) {
		t.Fatalf("second adoption of the key: %v", err)
	}
	again, err := tb.Acquire(context.Background(), req("203.0.113.7", time.Second))
	if err != nil || !again.Reused || again.Session.ID != s.ID || again.Session.Uses != 2 {
		t.Fatalf("Acquire after adoption: %+v %v", again, err)
	}
	for _, l := range []string{res.LeaseID, again.LeaseID} {
		if err := tb.Release(l, "p1"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "idle teardown of the adopted session", func() bool {
		return slices.Contains(f.teardownList(), "150:"+ReasonIdleTimeout) && len(tb.List()) == 0
	})
	if !tb.ReserveNetID(150) {
		t.Fatal("the adopted id was not freed by the teardown")
	}
}
