package consul_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

const (
	testNode = "nullnet-stacks"
	testTag  = "nullnet-definition"
)

// syncLog records every OnSynced call so tests can wait for a settled catalog.
type syncLog struct {
	mu     sync.Mutex
	writes []int
}

func (l *syncLog) add(n int) { l.mu.Lock(); l.writes = append(l.writes, n); l.mu.Unlock() }
func (l *syncLog) all() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.writes...)
}

func startMirror(t *testing.T, client *api.Client, name string, desired []consul.CatalogService) (*consul.Mirror, *syncLog, context.CancelFunc) {
	t.Helper()
	log := &syncLog{}
	m, err := consul.NewMirror(consul.MirrorConfig{
		Client: client, Logger: hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn}),
		LockKey: "nullnet/leader", Node: testNode, NodeMeta: map[string]string{"external-node": "true"},
		Tag: testTag, LockTTL: 10 * time.Second, OnSynced: log.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Set(desired)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return m, log, stop
}

func def(name, port string) consul.CatalogService {
	return consul.CatalogService{ID: "nullnet-def-s-" + name, Name: name,
		Meta: map[string]string{"nullnet-stack": "s", "nullnet-protocol": "tcp", "nullnet-listen-port": port}}
}

// nodeServices returns the services on the mirror node by ID.
func nodeServices(t *testing.T, c *api.Client) map[string]*api.AgentService {
	t.Helper()
	list, _, err := c.Catalog().NodeServiceList(testNode, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*api.AgentService{}
	if list != nil {
		for _, s := range list.Services {
			out[s.ID] = s
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMirror_FollowsDesiredAndLeavesOthersAlone(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	// A service on the same node without the tag: never touched.
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: testNode, Address: "127.0.0.1",
		Service: &api.AgentService{ID: "foreign", Service: "foreign"}}, nil); err != nil {
		t.Fatal(err)
	}

	m, _, _ := startMirror(t, c, "m1", []consul.CatalogService{def("a", "1000"), def("b", "2000")})
	waitFor(t, "a and b registered", func() bool {
		s := nodeServices(t, c)
		return s["nullnet-def-s-a"] != nil && s["nullnet-def-s-b"] != nil
	})
	if !m.IsLeader() {
		t.Error("mirror is not leader")
	}
	got := nodeServices(t, c)["nullnet-def-s-a"]
	if got.Service != "a" || got.Meta["nullnet-listen-port"] != "1000" || len(got.Tags) != 1 || got.Tags[0] != testTag {
		t.Errorf("a = %+v", got)
	}
	node, _, err := c.Catalog().Node(testNode, nil)
	if err != nil || node.Node.Meta["external-node"] != "true" {
		t.Errorf("node meta = %+v, %v", node, err)
	}

	// Change a, remove b.
	m.Set([]consul.CatalogService{def("a", "1001")})
	waitFor(t, "a changed and b removed", func() bool {
		s := nodeServices(t, c)
		return s["nullnet-def-s-b"] == nil && s["nullnet-def-s-a"] != nil && s["nullnet-def-s-a"].Meta["nullnet-listen-port"] == "1001"
	})
	// Someone deletes a definition by hand: the mirror repairs it.
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: testNode, ServiceID: "nullnet-def-s-a"}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a repaired", func() bool { return nodeServices(t, c)["nullnet-def-s-a"] != nil })

	m.Set(nil)
	waitFor(t, "a removed", func() bool { return nodeServices(t, c)["nullnet-def-s-a"] == nil })
	if nodeServices(t, c)["foreign"] == nil {
		t.Error("the untagged service was removed")
	}
}

func TestMirror_RestartWithSameSetWritesNothing(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	desired := []consul.CatalogService{def("a", "1000"), def("b", "2000")}
	_, log1, stop1 := startMirror(t, c, "m1", desired)
	waitFor(t, "first sync", func() bool {
		for _, n := range log1.all() {
			if n == 2 {
				return true
			}
		}
		return false
	})
	// Each definition was written exactly once: no intermediate watch answer caused a rewrite.
	time.Sleep(500 * time.Millisecond)
	total := 0
	for _, n := range log1.all() {
		total += n
	}
	if total != 2 {
		t.Errorf("first mirror wrote %d times for 2 definitions (log %v)", total, log1.all())
	}
	before := nodeServices(t, c)
	stop1()

	_, log2, _ := startMirror(t, c, "m2", desired)
	waitFor(t, "second mirror synced", func() bool { return len(log2.all()) > 0 })
	for _, n := range log2.all() {
		if n != 0 {
			t.Fatalf("restart with an unchanged set wrote %d times (log %v)", n, log2.all())
		}
	}
	after := nodeServices(t, c)
	for id, s := range before {
		if after[id] == nil || after[id].ModifyIndex != s.ModifyIndex {
			t.Errorf("%s modified by restart", id)
		}
	}
}

func TestMirror_OnlyTheLeaderWrites(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	m1, _, stop1 := startMirror(t, c, "m1", []consul.CatalogService{def("a", "1000")})
	waitFor(t, "m1 leads", m1.IsLeader)
	waitFor(t, "a registered", func() bool { return nodeServices(t, c)["nullnet-def-s-a"] != nil })

	// A second server with a different set must not fight over the catalog.
	m2, _, _ := startMirror(t, c, "m2", []consul.CatalogService{def("other", "3000")})
	time.Sleep(time.Second) // give a misbehaving m2 the chance to write
	if m2.IsLeader() {
		t.Fatal("two leaders")
	}
	if s := nodeServices(t, c); s["nullnet-def-s-other"] != nil || s["nullnet-def-s-a"] == nil {
		t.Fatalf("the follower wrote: %v", keys(s))
	}

	// The leader leaves: the other takes over and applies its set.
	stop1()
	waitFor(t, "m2 leads", m2.IsLeader)
	waitFor(t, "m2's set applied", func() bool {
		s := nodeServices(t, c)
		return s["nullnet-def-s-other"] != nil && s["nullnet-def-s-a"] == nil
	})
}

func keys(m map[string]*api.AgentService) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// More definitions than one transaction holds: they go in chunks of consul.MaxTxnOps, the node
// announces the set (digest and count), and a reader sees it complete only at the end.
func TestMirror_ManyServicesInTransactions(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	var desired []consul.CatalogService
	for i := range 300 {
		desired = append(desired, def(fmt.Sprintf("s%03d", i), fmt.Sprint(10000+i)))
	}
	_, log, _ := startMirror(t, c, "m1", desired)
	waitFor(t, "300 registered", func() bool { return len(nodeServices(t, c)) == 300 })
	st, _, err := consul.ReadNode(context.Background(), c, testNode, testTag, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Complete() || st.Expected() != 300 || st.Meta["external-node"] != "true" {
		t.Errorf("node meta %v, complete %v", st.Meta, st.Complete())
	}
	waitFor(t, "synced", func() bool { return len(log.all()) > 0 })
	total := 0
	for _, n := range log.all() {
		total += n
	}
	if total != 300 {
		t.Errorf("%d writes for 300 definitions (log %v)", total, log.all())
	}
}

// The announcement makes a half-written set visible as such.
func TestNodeState_HalfWrittenIsIncomplete(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	want := []consul.CatalogService{def("a", "1"), def("b", "2")}
	for i := range want {
		want[i].Tags = []string{testTag}
	}
	ops := api.TxnOps{
		{Node: &api.NodeTxnOp{Verb: api.NodeSet, Node: api.Node{Node: testNode, Address: "127.0.0.1",
			Meta: map[string]string{consul.MetaDigest: consul.Digest(want), consul.MetaCount: "2"}}}},
		{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: testNode,
			Service: api.AgentService{ID: want[0].ID, Service: want[0].Name, Tags: want[0].Tags, Meta: want[0].Meta}}},
	}
	if ok, resp, _, err := c.Txn().Txn(ops, nil); err != nil || !ok {
		t.Fatal(err, resp)
	}
	st, _, err := consul.ReadNode(context.Background(), c, testNode, testTag, 0, 0)
	if err != nil || st.Complete() {
		t.Fatalf("half-written set read as complete (%v)", err)
	}
	ops = api.TxnOps{{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: testNode,
		Service: api.AgentService{ID: want[1].ID, Service: want[1].Name, Tags: want[1].Tags, Meta: want[1].Meta}}}}
	if ok, resp, _, err := c.Txn().Txn(ops, nil); err != nil || !ok {
		t.Fatal(err, resp)
	}
	if st, _, err = consul.ReadNode(context.Background(), c, testNode, testTag, 0, 0); err != nil || !st.Complete() {
		t.Fatalf("whole set read as incomplete (%v)", err)
	}
}
