package server

import (
	"fmt"
	"testing"
)

func TestUnhealthySet(t *testing.T) {
	u := newUnhealthySet()
	render := func() string {
		list, _, _ := u.snapshot()
		s := ""
		for _, r := range list {
			s += fmt.Sprintf("%s=%s ", r.GetService(), r.GetReplicaId())
		}
		return s
	}
	_, v0, _ := u.snapshot()
	if v0 == 0 {
		t.Fatal("the first set must be sendable (version > 0)")
	}
	// Critical replicas of a service without the key are known but not published.
	if u.setCritical("db", []string{"n2/db-2", "n1/db-1"}) || render() != "" {
		t.Fatalf("published for a service without close_on_unhealthy: %q", render())
	}
	if !u.setServices(map[string]bool{"db": true}, map[string]bool{"db": true, "web": true}) {
		t.Fatal("turning the key on published nothing")
	}
	if got := render(); got != "db=n1/db-1 db=n2/db-2 " {
		t.Fatalf("set %q", got)
	}
	_, v1, changed := u.snapshot()
	if u.setCritical("db", []string{"n1/db-1", "n2/db-2"}) {
		t.Fatal("the same replicas in another order are a change")
	}
	if !u.setCritical("db", []string{"n2/db-2"}) {
		t.Fatal("a replica back to health is no change")
	}
	select {
	case <-changed:
	default:
		t.Fatal("watchers not woken")
	}
	if _, v2, _ := u.snapshot(); v2 <= v1 || render() != "db=n2/db-2 " {
		t.Fatalf("version %d after %d, set %q", v2, v1, render())
	}
	// A service no longer watched is forgotten; the key off unpublishes.
	u.setCritical("web", []string{"n1/web-1"})
	u.setServices(map[string]bool{"web": true}, map[string]bool{"web": true})
	if render() != "web=n1/web-1 " {
		t.Fatalf("set %q", render())
	}
	u.setServices(map[string]bool{"web": true, "db": true}, map[string]bool{"web": true, "db": true})
	if render() != "web=n1/web-1 " {
		t.Fatalf("db's critical replicas survived while it was not watched: %q", render())
	}
}
