package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc/codes"
)

// Replicas are found without a blocking query per service: a replica without any health check
// (its changes move no check, only the catalog's service index) appears, moves to another
// port and goes away, and the server follows each step.
func TestProxy_ReplicaWithoutChecks(t *testing.T) {
	e := newPlaneEnv(t, config.NetworkDirect, directStack, nil)
	e.waitDefined("web", "proxy-1")
	register := func(port int) {
		t.Helper()
		_, err := e.client.Catalog().Register(&api.CatalogRegistration{Node: "nochecks-node", Address: "127.0.0.1",
			Service: &api.AgentService{ID: "web-nc", Service: "web", Port: port,
				Meta: map[string]string{server.MetaNode: "node-a"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	upstreamPort := func(client string) (int, codes.Code) {
		r, err := e.proxy(client, "web", "proxy-1")
		if err != nil {
			return 0, code(err)
		}
		e.release(r.LeaseId, "proxy-1")
		return int(r.UpstreamPort), codes.OK
	}

	register(7001)
	eventually(t, 10*time.Second, "the replica without checks", func() bool {
		p, _ := upstreamPort("203.0.113.1")
		return p == 7001
	})
	register(7002) // same instance, another port: no check changes
	n := 10
	eventually(t, 10*time.Second, "the new port", func() bool {
		n++ // a new client each time: a live session keeps the upstream it was built with
		p, _ := upstreamPort(fmt.Sprintf("203.0.113.%d", n))
		return p == 7002
	})
	if _, err := e.client.Catalog().Deregister(&api.CatalogDeregistration{Node: "nochecks-node", ServiceID: "web-nc"}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the replica gone", func() bool {
		_, c := upstreamPort("203.0.113.3")
		return c == codes.Unavailable
	})
	if len(e.eventsOf(events.ReplicaRemoved)) == 0 {
		t.Error("no replica_removed event")
	}
}
