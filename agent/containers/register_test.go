package containers

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/client"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

// TestLeaveRemovesEarlierRunsReplicas: an agent that leaves before its watcher first listed the
// engine still removes the container replicas an earlier run kept registered (a restart), and
// nothing else of the node.
func TestLeaveRemovesEarlierRunsReplicas(t *testing.T) {
	cc := consultest.Start(t).Client(t)
	node := "leave-" + time.Now().Format("150405.000000")
	kept := &api.AgentServiceRegistration{ID: ServiceID(node, "0123456789abcdef"), Name: "kept-" + node,
		Meta: map[string]string{MetaNode: node}}
	other := &api.AgentServiceRegistration{ID: "nullnet-host-" + node + "-web", Name: "host-" + node,
		Meta: map[string]string{MetaNode: node}}
	for _, r := range []*api.AgentServiceRegistration{kept, other} {
		if err := cc.Agent().ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = cc.Agent().ServiceDeregister(other.ID) })

	// An engine that never answers: the watcher never syncs, so reconcile never runs.
	docker, err := client.New(client.WithHost("unix:///nonexistent/" + node + ".sock"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Docker: docker})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	(&Registrar{Consul: cc, Node: node, Watcher: w}).Run(ctx, func() bool { return false })

	services, err := cc.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := services[kept.ID]; ok {
		t.Errorf("container replica %s of an earlier run is still registered after leave", kept.ID)
	}
	if _, ok := services[other.ID]; !ok {
		t.Errorf("leave removed %s, which is not a container replica", other.ID)
	}
}
