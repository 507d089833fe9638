package server_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
)

const vxlanStack = `stack "nnss" {
  service "web" {
    protocol    = "tcp"
    listen_port = 18080
    timeout     = "2s"
  }
}
`

// The "done when" list with real kernel devices: three hosts (network namespaces on one
// underlay bridge), two service nodes and one proxy node, each speaking the control channel and
// building its ends with overlay.Manager; the server against a real Consul.
func TestProxy_VXLAN(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnss", 3)
	e := newPlaneEnv(t, config.NetworkVXLAN, vxlanStack, func(c *config.Config) {
		c.Server.NodeGracePeriod = time.Second
		c.Server.OrphanGrace = time.Second // unknown ends are kept this long for adoption
	})
	nodeA := startNode(t, e, "node-a", hosts[0])
	nodeB := startNode(t, e, "node-b", hosts[1])
	proxyNode := startNode(t, e, "proxy-1", hosts[2])
	parent := t // nodes restarted inside a subtest must outlive it
	e.waitDefined("web", "proxy-1")

	if _, err := e.proxy("203.0.113.7", "web", "proxy-unknown"); code(err) != codes.FailedPrecondition {
		t.Fatalf("proxy node without a control channel: %v", err)
	}
	for _, h := range hosts[:2] {
		echoServer(t, h.Listen(t, "tcp", "0.0.0.0:8080"))
	}
	e.registerReplica("web-a", "web", "node-a", hosts[0].Underlay.String(), 8080)

	var first *pb.ProxyResponse
	var err error
	eventually(t, 30*time.Second, "a replica", func() bool {
		first, err = e.proxy("203.0.113.7", "web", "proxy-1")
		return err == nil
	})
	up, _ := overlay.Upstream(first.NetId)
	if first.UpstreamIp != up.String() || first.UpstreamPort != 8080 || first.Reused {
		t.Fatalf("first call: %+v, want upstream %s:8080", first, up)
	}
	names := func(side overlay.Side) []string {
		n := overlay.NamesFor(first.NetId, side)
		return []string{n.Bridge, n.VXLAN}
	}
	hasAll := func(have, want []string) bool {
		for _, w := range want {
			if !slices.Contains(have, w) {
				return false
			}
		}
		return true
	}
	if d := nodeA.devices(t); !hasAll(d, names(overlay.SideService)) {
		t.Fatalf("service node devices %v, want %v", d, names(overlay.SideService))
	}
	if d := proxyNode.devices(t); !hasAll(d, names(overlay.SideProxy)) {
		t.Fatalf("proxy node devices %v, want %v", d, names(overlay.SideProxy))
	}
	upstream := net.JoinHostPort(first.UpstreamIp, strconv.Itoa(int(first.UpstreamPort)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := hosts[2].Dial(ctx, "", upstream)
	if err != nil {
		t.Fatalf("dialing the upstream from the proxy host: %v", err)
	}
	roundTrip(t, conn)
	conn.Close()

	setups := nodeA.setups.Load() + proxyNode.setups.Load()
	second, err := e.proxy("203.0.113.7", "web", "proxy-1")
	if err != nil || !second.Reused || second.SessionId != first.SessionId || second.NetId != first.NetId {
		t.Fatalf("second call: %+v %v", second, err)
	}
	if n := nodeA.setups.Load() + proxyNode.setups.Load(); n != setups {
		t.Fatalf("a reused session sent %d more setup commands", n-setups)
	}

	t.Run("50 concurrent calls build one tunnel", func(t *testing.T) {
		before := nodeA.setups.Load() + proxyNode.setups.Load()
		var wg sync.WaitGroup
		res := make([]*pb.ProxyResponse, 50)
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := e.proxy("203.0.113.50", "web", "proxy-1")
				if err != nil {
					t.Errorf("call %d: %v", i, err)
				}
				res[i] = r
			}()
		}
		wg.Wait()
		created := 0
		for _, r := range res {
			if r == nil || r.SessionId != res[0].SessionId {
				t.Fatalf("sessions differ")
			}
			if !r.Reused {
				created++
			}
		}
		if n := nodeA.setups.Load() + proxyNode.setups.Load() - before; n != 2 || created != 1 {
			t.Fatalf("%d setup commands and %d creating calls, want 2 and 1", n, created)
		}
		for _, r := range res {
			e.release(r.LeaseId, "proxy-1")
		}
		eventually(t, 20*time.Second, "idle teardown of the shared session", func() bool {
			return len(e.sessions()) == 1
		})
	})

	t.Run("open use outlives the timeout; release tears down about 2s later", func(t *testing.T) {
		time.Sleep(3 * time.Second) // 2 s timeout; the first session still holds two uses
		if s := e.sessions(); len(s) != 1 || s[0]["state"] != "active" {
			t.Fatalf("session with open uses: %v", s)
		}
		e.release(first.LeaseId, "proxy-1")
		released := time.Now()
		e.release(second.LeaseId, "proxy-1")
		eventually(t, 20*time.Second, "teardown", func() bool { return len(e.sessions()) == 0 })
		if d := time.Since(released); d < 2*time.Second || d > 8*time.Second {
			t.Errorf("torn down %s after release, want about 2s", d)
		}
		for _, n := range []*testNode{nodeA, proxyNode} {
			if d := n.devices(t); len(d) != 0 {
				t.Fatalf("%s still has devices %v", n.name, d)
			}
		}
	})

	t.Run("unhealthy replica: teardown, then another replica", func(t *testing.T) {
		r, err := e.proxy("203.0.113.9", "web", "proxy-1")
		if err != nil {
			t.Fatal(err)
		}
		e.registerReplica("web-b", "web", "node-b", hosts[1].Underlay.String(), 8080)
		e.setHealth("web-a", "critical")
		eventually(t, 30*time.Second, "teardown", func() bool { return len(e.sessions()) == 0 })
		td := e.eventsOf(events.SessionTornDown)
		if got := td[len(td)-1].Fields["reason"]; got != "replica_unhealthy" {
			t.Fatalf("reason %s", got)
		}
		if d := nodeA.devices(t); len(d) != 0 {
			t.Fatalf("node-a still has %v", d)
		}
		var next *pb.ProxyResponse
		eventually(t, 30*time.Second, "replica b", func() bool {
			next, err = e.proxy("203.0.113.9", "web", "proxy-1")
			return err == nil
		})
		s := e.sessions()
		if len(s) != 1 || s[0]["replica"].(map[string]any)["node"] != "node-b" {
			t.Fatalf("sessions %v", s)
		}
		_ = r
		conn, err := hosts[2].Dial(ctx, "", net.JoinHostPort(next.UpstreamIp, "8080"))
		if err != nil {
			t.Fatalf("dialing replica b: %v", err)
		}
		roundTrip(t, conn)
		conn.Close()
	})

	t.Run("node back within the grace period without its ends: end_lost; stale ends removed", func(t *testing.T) {
		if len(e.sessions()) != 1 {
			t.Fatalf("sessions %v", e.sessions())
		}
		// node-b restarts: its Hello lists no end (start-up cleanup ran), so the session with
		// it is broken and torn down on both nodes.
		nodeB.stop()
		nodeB = startNode(parent, e, "node-b", hosts[1])
		eventually(t, 30*time.Second, "end_lost teardown", func() bool { return len(e.sessions()) == 0 })
		td := e.eventsOf(events.SessionTornDown)
		if got := td[len(td)-1].Fields["reason"]; got != "end_lost" {
			t.Fatalf("reason %s", got)
		}
		eventually(t, 10*time.Second, "no devices on node-b and proxy-1", func() bool {
			return len(nodeB.devices(t)) == 0 && len(proxyNode.devices(t)) == 0
		})
		// proxy-1 reconnects reporting an end no session knows: the server removes it.
		if _, err := proxyNode.mgr.Setup(context.Background(), overlay.End{NetID: 4000, Side: overlay.SideProxy,
			Local: hosts[2].Underlay, Remote: hosts[0].Underlay}); err != nil {
			t.Fatal(err)
		}
		proxyNode.stop()
		proxyNode = startNode(parent, e, "proxy-1", hosts[2],
			&pb.OverlayEndRef{NetId: 4000, Side: pb.OverlaySide_OVERLAY_SIDE_PROXY})
		eventually(t, 10*time.Second, "stale end removed", func() bool { return len(proxyNode.devices(t)) == 0 })
		if _, err := e.proxy("203.0.113.11", "web", "proxy-1"); err != nil {
			t.Fatalf("new session after the restarts: %v", err)
		}
	})

	t.Run("killed service node agent: teardown after the grace period", func(t *testing.T) {
		nodeB.stop()
		eventually(t, 30*time.Second, "teardown", func() bool { return len(e.sessions()) == 0 })
		td := e.eventsOf(events.SessionTornDown)
		if got := td[len(td)-1].Fields["reason"]; got != "node_gone" {
			t.Fatalf("reason %s (all: %+v)", got, td)
		}
		if d := proxyNode.devices(t); len(d) != 0 {
			t.Fatalf("proxy node still has %v", d)
		}
		if _, err := e.proxy("203.0.113.10", "web", "proxy-1"); code(err) != codes.Unavailable {
			t.Fatalf("no usable replica left: %v", err)
		}
	})
}
