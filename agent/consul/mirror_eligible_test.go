package consul_test

import (
	"testing"

	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

// A mirror made ineligible (its server cannot read its stacks) releases the leader lock at once,
// so a standby takes it over; it does not campaign while ineligible, and campaigns again once
// eligible. The definitions it wrote stay in the catalog.
func TestMirrorIneligibleGivesUpTheLock(t *testing.T) {
	srv := consultest.Start(t)
	client := srv.Client(t)
	a, _, _ := startMirror(t, client, "a", []consul.CatalogService{def("redis", "6379")})
	waitFor(t, "a to lead", a.IsLeader)
	waitFor(t, "the definition", func() bool { return nodeServices(t, client)["nullnet-def-s-redis"] != nil })
	b, _, _ := startMirror(t, client, "b", []consul.CatalogService{def("redis", "6379")})

	a.SetEligible(false)
	waitFor(t, "b to take over from an ineligible a", b.IsLeader)
	if a.IsLeader() {
		t.Fatal("a still leads while ineligible")
	}
	if nodeServices(t, client)["nullnet-def-s-redis"] == nil {
		t.Fatal("the definition was removed when a stepped down")
	}

	// b steps down too: nobody may lead; a, eligible again, takes it.
	b.SetEligible(false)
	waitFor(t, "b to step down", func() bool { return !b.IsLeader() })
	a.SetEligible(true)
	waitFor(t, "a to lead again once eligible", a.IsLeader)
	if b.IsLeader() {
		t.Fatal("b leads while ineligible")
	}
}
