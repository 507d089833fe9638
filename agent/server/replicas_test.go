package server

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/server/session"
)

func inst(id, node string, passing bool) replicaInstance {
	return replicaInstance{Replica: session.Replica{ID: id, Node: node, Port: 80}, passing: passing}
}

func TestReplicaViewCandidates(t *testing.T) {
	connected := func(n string) bool { return n == "a" || n == "b" }
	cases := []struct {
		name    string
		all     []replicaInstance
		wantIDs []string
		why     string
	}{
		{"none registered", nil, nil, "no instance is registered"},
		{"none passing", []replicaInstance{inst("x/1", "a", false)}, nil, "none passing"},
		{"not on nullnet", []replicaInstance{inst("x/1", "", true)}, nil, "none on a node that runs a nullnet agent"},
		{"no control channel", []replicaInstance{inst("x/1", "c", true)}, nil, "none with a live control channel"},
		{"mixed", []replicaInstance{inst("x/1", "a", true), inst("x/2", "b", false), inst("x/3", "c", true), inst("x/4", "b", true)},
			[]string{"x/1", "x/4"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why := replicaView{known: true, all: c.all}.candidates(connected)
			var ids []string
			for _, r := range got {
				ids = append(ids, r.ID)
			}
			if strings.Join(ids, ",") != strings.Join(c.wantIDs, ",") {
				t.Errorf("candidates = %v, want %v", ids, c.wantIDs)
			}
			if c.why != "" && !strings.Contains(why, c.why) {
				t.Errorf("why = %q, want it to contain %q", why, c.why)
			}
		})
	}
}

func TestReplicaViewStatus(t *testing.T) {
	v := replicaView{known: true, all: []replicaInstance{inst("x/1", "a", true), inst("x/2", "a", false), inst("x/3", "", true)}}
	cases := []struct {
		r    session.Replica
		want string
	}{
		{session.Replica{ID: "x/1", Node: "a"}, ""},
		{session.Replica{ID: "x/2", Node: "a"}, session.ReasonReplicaUnhealthy},
		{session.Replica{ID: "x/3", Node: "a"}, session.ReasonReplicaGone}, // its node stopped running nullnet
		{session.Replica{ID: "x/1", Node: "b"}, session.ReasonReplicaGone}, // now served by another node
		{session.Replica{ID: "x/9", Node: "a"}, session.ReasonReplicaGone},
	}
	for _, c := range cases {
		if got := v.status(c.r); got != c.want {
			t.Errorf("status(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
}

// replicaInstances reads a health answer: only instances that can serve traffic, once each.
func TestReplicaInstances(t *testing.T) {
	node := func(n, addr string) *api.Node { return &api.Node{Node: n, Address: addr} }
	svc := func(id string, port int, tags ...string) *api.AgentService {
		return &api.AgentService{ID: id, Service: "web", Port: port, Tags: tags}
	}
	passing := api.HealthChecks{{Node: "c1", CheckID: "p", ServiceID: "w1", Status: api.HealthPassing}}
	entries := []*api.ServiceEntry{
		nil,
		{Node: nil, Service: svc("w0", 80)},
		{Node: node("c1", "192.0.2.1"), Service: nil},
		{Node: node("c1", "192.0.2.1"), Service: svc("noport", 0)},
		{Node: node("c1", "192.0.2.1"), Service: svc("bigport", 65536)},
		{Node: node("c1", "192.0.2.1"), Service: svc("def", 80, DefinitionTag)},
		{Node: node("c2", "192.0.2.2"), Service: &api.AgentService{ID: "w2", Port: 8080, Address: "10.9.9.9"},
			Checks: api.HealthChecks{nil, {Node: "c2", CheckID: "serfHealth", Status: api.HealthCritical}}},
		{Node: node("c1", "192.0.2.1"), Service: svc("w1", 8080), Checks: passing},
		{Node: node("c1", "192.0.2.1"), Service: svc("w1", 9090)}, // same ID again: the first counts
	}
	got := replicaInstances(entries)
	want := []replicaInstance{
		{Replica: session.Replica{ID: "c1/w1", Address: "192.0.2.1", Port: 8080}, consulNode: "c1", passing: true, checked: true},
		{Replica: session.Replica{ID: "c2/w2", Address: "10.9.9.9", Port: 8080}, consulNode: "c2"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("replicaInstances:\n got %+v\nwant %+v", got, want)
	}
}
