package server

import (
	"maps"
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
		{Replica: session.Replica{ID: "c2/w2", Address: "10.9.9.9", Port: 8080}, consulNode: "c2", critical: true}, // serfHealth critical
	}
	if !slices.Equal(got, want) {
		t.Fatalf("replicaInstances:\n got %+v\nwant %+v", got, want)
	}
}

func TestFingerprints(t *testing.T) {
	check := func(node, svcID, svc, id, status string, idx uint64) *api.HealthCheck {
		return &api.HealthCheck{Node: node, ServiceID: svcID, ServiceName: svc, CheckID: id, Status: status, ModifyIndex: idx}
	}
	base := api.HealthChecks{
		check("n1", "", "", "serfHealth", "passing", 5),
		check("n1", "web-1", "web", "c1", "passing", 7),
		check("n2", "web-2", "web", "c2", "passing", 8),
		check("n2", "db-1", "db", "c3", "critical", 9),
	}
	bySvc, byNode := fingerprints(base)
	if len(bySvc) != 2 || len(byNode) != 1 {
		t.Fatalf("bySvc %v byNode %v", bySvc, byNode)
	}
	// Order of the answer does not matter.
	rev := slices.Clone(base)
	slices.Reverse(rev)
	if s2, n2 := fingerprints(rev); !maps.Equal(s2, bySvc) || !maps.Equal(n2, byNode) {
		t.Error("order changed the fingerprints")
	}
	cases := []struct {
		name      string
		change    func(api.HealthChecks) api.HealthChecks
		svc, node string // which fingerprint must change ("" = none)
		unchanged string // a service whose fingerprint must not change
	}{
		{"status of a service check", func(c api.HealthChecks) api.HealthChecks {
			c[1] = check("n1", "web-1", "web", "c1", "critical", 10)
			return c
		}, "web", "", "db"},
		{"a node check", func(c api.HealthChecks) api.HealthChecks {
			c[0] = check("n1", "", "", "serfHealth", "critical", 11)
			return c
		}, "", "n1", "web"},
		{"an instance gone", func(c api.HealthChecks) api.HealthChecks { return c[:3] }, "db", "", "web"},
	}
	for _, c := range cases {
		s2, n2 := fingerprints(c.change(slices.Clone(base)))
		if c.svc != "" && s2[c.svc] == bySvc[c.svc] {
			t.Errorf("%s: fingerprint of %s unchanged", c.name, c.svc)
		}
		if c.node != "" && n2[c.node] == byNode[c.node] {
			t.Errorf("%s: fingerprint of node %s unchanged", c.name, c.node)
		}
		if s2[c.unchanged] != bySvc[c.unchanged] {
			t.Errorf("%s: fingerprint of %s changed", c.name, c.unchanged)
		}
	}
}
