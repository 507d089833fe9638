package server_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

const adoptStack = `stack "nnad" {
  service "web" {
    protocol    = "tcp"
    listen_port = 18081
    timeout     = "30s"
  }
}
`

// A restarted server adopts the tunnel a proxy still relays a live connection over: no
// teardown, no setup, an Active session with one use; a tunnel nobody adopts is removed once
// server.orphan_grace has passed.
func TestProxy_AdoptAfterServerRestart(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnad", 2)
	c := consultest.Start(t)
	e := &planeEnv{t: t, consul: c, client: c.Client(t)}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.hcl"), []byte(adoptStack), 0o644); err != nil {
		t.Fatal(err)
	}
	const grace = 6 * time.Second
	tune := func(c *config.Config) {
		c.NodeName = "nnad-server"
		c.Server.NodeGracePeriod = 30 * time.Second
		c.Server.OrphanGrace = grace
	}
	stop := startServerRole(t, e, dir, tune)
	nodeA := startNode(t, e, "node-a", hosts[0])
	proxyNode := startNode(t, e, "proxy-1", hosts[1])
	e.waitDefined("web", "proxy-1")
	echoServer(t, hosts[0].Listen(t, "tcp", "0.0.0.0:8080"))
	e.registerReplica("web-a", "web", "node-a", hosts[0].Underlay.String(), 8080)

	var live, other *pb.ProxyResponse
	var err error
	eventually(t, 30*time.Second, "a replica", func() bool {
		live, err = e.proxy("203.0.113.7", "web", "proxy-1")
		return err == nil
	})
	if other, err = e.proxy("203.0.113.8", "web", "proxy-1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := hosts[1].Dial(ctx, "", net.JoinHostPort(live.UpstreamIp, strconv.Itoa(int(live.UpstreamPort))))
	if err != nil {
		t.Fatalf("dialing the upstream from the proxy host: %v", err)
	}
	defer conn.Close()
	roundTrip(t, conn)

	// The server goes away; its nodes lose their channels and keep their devices.
	nodeA.stop()
	proxyNode.stop()
	stop()
	ends := func(side pb.OverlaySide) []*pb.OverlayEndRef {
		return []*pb.OverlayEndRef{{NetId: live.NetId, Side: side}, {NetId: other.NetId, Side: side}}
	}
	startServerRole(t, e, dir, tune)
	restarted := time.Now()
	nodeA = startNode(t, e, "node-a", hosts[0], ends(pb.OverlaySide_OVERLAY_SIDE_SERVICE)...)
	proxyNode = startNode(t, e, "proxy-1", hosts[1], ends(pb.OverlaySide_OVERLAY_SIDE_PROXY)...)
	has := func(n *testNode, id uint32, side overlay.Side) bool {
		return slices.Contains(n.devices(t), overlay.NamesFor(id, side).VXLAN)
	}

	var adopted *pb.ProxyResponse
	eventually(t, 30*time.Second, "the restarted server to read the stacks", func() bool {
		actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer acancel()
		adopted, err = e.ingress.Proxy(actx, &pb.ProxyRequest{ClientIp: "203.0.113.7", Service: "web", ProxyNode: "proxy-1",
			Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP,
			Adopt:    &pb.AdoptUse{NetId: live.NetId, UpstreamIp: live.UpstreamIp, UpstreamPort: live.UpstreamPort}})
		return err == nil || !strings.Contains(err.Error(), "not read the stack definitions")
	})
	if err != nil {
		t.Fatalf("adopting: %v", err)
	}
	if time.Since(restarted) >= grace {
		t.Fatalf("adoption took longer than the orphan grace (%s): the test cannot judge the orphan", grace)
	}
	if adopted.NetId != live.NetId || adopted.UpstreamIp != live.UpstreamIp || adopted.UpstreamPort != live.UpstreamPort {
		t.Fatalf("adopted %+v, want net id %d upstream %s:%d", adopted, live.NetId, live.UpstreamIp, live.UpstreamPort)
	}
	if n := nodeA.setups.Load() + proxyNode.setups.Load(); n != 0 {
		t.Fatalf("adoption sent %d setup commands", n)
	}
	if n := nodeA.teardowns.Load() + proxyNode.teardowns.Load(); n != 0 {
		t.Fatalf("%d teardown commands before the orphan grace ended", n)
	}
	if !has(nodeA, other.NetId, overlay.SideService) || !has(proxyNode, other.NetId, overlay.SideProxy) {
		t.Fatalf("the unadopted tunnel was removed before the orphan grace ended")
	}
	ss := e.sessions()
	if len(ss) != 1 || ss[0]["state"] != "active" || ss[0]["uses"] != float64(1) || ss[0]["id"] != adopted.SessionId ||
		ss[0]["net_id"] != float64(live.NetId) {
		t.Fatalf("sessions after adoption: %v", ss)
	}
	if ev := e.eventsOf(events.SessionAdopted); len(ev) != 1 || ev[0].Fields["net_id"] != strconv.Itoa(int(live.NetId)) {
		t.Fatalf("session_adopted events: %+v", ev)
	}
	roundTrip(t, conn)

	// A second call for the same client joins the adopted session.
	again, err := e.proxy("203.0.113.7", "web", "proxy-1")
	if err != nil || again.SessionId != adopted.SessionId || !again.Reused {
		t.Fatalf("call after adoption: %+v %v", again, err)
	}
	e.release(again.LeaseId, "proxy-1")

	// The orphan nobody adopted goes once the grace has passed; the adopted tunnel stays.
	eventually(t, grace+30*time.Second, "unadopted orphan removed", func() bool {
		return !has(nodeA, other.NetId, overlay.SideService) && !has(proxyNode, other.NetId, overlay.SideProxy)
	})
	if d := time.Since(restarted); d < grace {
		t.Fatalf("orphan removed %s after the restart, before the grace of %s", d, grace)
	}
	if !has(nodeA, live.NetId, overlay.SideService) || !has(proxyNode, live.NetId, overlay.SideProxy) {
		t.Fatalf("the adopted tunnel lost a device: node-a %v, proxy-1 %v", nodeA.devices(t), proxyNode.devices(t))
	}
	roundTrip(t, conn)
	if ss := e.sessions(); len(ss) != 1 || ss[0]["state"] != "active" || ss[0]["uses"] != float64(1) {
		t.Fatalf("sessions after the orphan grace: %v", ss)
	}
	// The freed id is usable again and the adopted one is not handed out twice.
	fresh, err := e.proxy("203.0.113.9", "web", "proxy-1")
	if err != nil || fresh.NetId == live.NetId {
		t.Fatalf("new session after the grace: %+v %v", fresh, err)
	}
}

// network = "direct": adopting needs no tunnel; the session is created for the replica the
// proxy is connected to. An upstream no healthy replica has is answered like a normal call.
func TestProxy_AdoptDirect(t *testing.T) {
	e := newPlaneEnv(t, config.NetworkDirect, directStack, nil)
	e.waitDefined("web", "proxy-1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	port := ln.Addr().(*net.TCPAddr).Port
	e.registerReplica("web-1", "web", "node-a", "127.0.0.1", port)
	adopt := func(client, ip string, port int) (*pb.ProxyResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return e.ingress.Proxy(ctx, &pb.ProxyRequest{ClientIp: client, Service: "web", ProxyNode: "proxy-1",
			Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP,
			Adopt:    &pb.AdoptUse{UpstreamIp: ip, UpstreamPort: uint32(port)}})
	}
	var r *pb.ProxyResponse
	eventually(t, 30*time.Second, "a replica", func() bool {
		_, err := e.proxy("192.0.2.1", "web", "proxy-1")
		return err == nil
	})
	if r, err = adopt("203.0.113.7", "127.0.0.1", port); err != nil {
		t.Fatal(err)
	}
	if r.UpstreamIp != "127.0.0.1" || int(r.UpstreamPort) != port || r.NetId != 0 {
		t.Fatalf("adopted %+v", r)
	}
	if ev := e.eventsOf(events.SessionAdopted); len(ev) != 1 || ev[0].Fields["client_ip"] != "203.0.113.7" {
		t.Fatalf("session_adopted events: %+v", ev)
	}
	created := len(e.eventsOf(events.SessionCreated))
	// A wrong upstream cannot be adopted: a session is built as for any call.
	if r, err = adopt("203.0.113.8", "127.0.0.2", port); err != nil || r.UpstreamIp != "127.0.0.1" {
		t.Fatalf("unadoptable call: %+v %v", r, err)
	}
	if n := len(e.eventsOf(events.SessionCreated)); n != created+1 || len(e.eventsOf(events.SessionAdopted)) != 1 {
		t.Fatalf("unadoptable call: %d sessions created (want 1), adopted events %d", n-created,
			len(e.eventsOf(events.SessionAdopted)))
	}
	// A known key joins its session (a stream blip, not a restart).
	again, err := adopt("203.0.113.7", "127.0.0.1", port)
	if err != nil || !again.Reused || len(e.eventsOf(events.SessionAdopted)) != 1 {
		t.Fatalf("re-announcing to a server that knows the session: %+v %v", again, err)
	}
}
