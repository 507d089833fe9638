package server_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/client"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/nullnet/nullnet/config"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// stopKind is how a node's agent goes away in the restart tests.
type stopKind int

const (
	// stopGraceful is SIGTERM's path: Run's context ends, the role stops with the default
	// client.keep_tunnels_on_stop = true.
	stopGraceful stopKind = iota
	// stopKill first cuts the role's gRPC connection, so that the server sees the control
	// channel die mid-stream as when the process is killed, then ends Run.
	stopKill
	// stopLeave is `nullnet leave`: Leave, then Run's context ends.
	stopLeave
)

func (k stopKind) String() string { return [...]string{"SIGTERM", "kill", "leave"}[k] }

// nodeAgent runs the real client role for a host, with the default agent configuration, over a
// gRPC connection of its own; stop ends it the given way (once; later calls do nothing).
func nodeAgent(t *testing.T, e *planeEnv, name string, h *overlaytest.Host) (stop func(stopKind)) {
	t.Helper()
	mgr, err := overlay.New(overlay.Config{NetNS: h.NS, SpareBridges: 4})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(e.grpc.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName, cfg.AdvertiseAddr, cfg.Client.Enabled = name, h.Underlay.String(), true
	logger := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: testWriter{t}})
	c, err := client.New(client.Config{Agent: cfg, Conn: conn, Overlay: mgr, Logger: logger,
		Events: events.NewReporter(name, e.grpc, nil, logger)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(runCtx) }()
	stopped := false
	stop = func(k stopKind) {
		if stopped {
			return
		}
		stopped = true
		switch k {
		case stopKill:
			_ = conn.Close()
		case stopLeave:
			c.Leave()
		}
		cancel()
		<-done
		_ = conn.Close()
		mgr.Close()
	}
	t.Cleanup(func() { stop(stopGraceful) })
	return stop
}

// tunnelDevices lists a host's nullnet tunnel devices.
func tunnelDevices(t *testing.T, h *overlaytest.Host) []string {
	t.Helper()
	var out []string
	for _, n := range linkNames(t, h) {
		if _, _, ok := overlay.ParseName(n); ok {
			out = append(out, n)
		}
	}
	return out
}

// linkNames lists a host's devices.
func linkNames(t *testing.T, h *overlaytest.Host) []string {
	t.Helper()
	links, err := h.Handle(t).LinkList()
	for range 5 { // a dump interrupted by a concurrent change is retried, as the agent does
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		links, err = h.Handle(t).LinkList()
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		out = append(out, l.Attrs().Name)
	}
	return out
}

// Restarting a node's agent (service side, then proxy side) keeps the tunnels of live sessions,
// whether it stopped gracefully (SIGTERM: the role's real stop path, which leaves its ends in
// place) or was killed: the restarted agent keeps the complete ends it finds (an earlier run's), reports them in
// Hello.active_ends, and the server keeps the sessions they belong to; an end the server does not
// know is torn down at once (the server has run past its orphan grace), incomplete leftovers are
// removed at start. A restarted proxy node's old uses are released (they died with its process),
// so the session ends after its timeout once the last new use is gone, and nothing is left.
func TestProxy_NodeAgentRestartKeepsTunnels(t *testing.T) {
	for _, k := range []stopKind{stopGraceful, stopKill} {
		t.Run(k.String(), func(t *testing.T) { testNodeAgentRestart(t, k) })
	}
}

func testNodeAgentRestart(t *testing.T, how stopKind) {
	hosts := overlaytest.Hosts(t, "nnrs", 2)
	svcHost, proxyHost := hosts[0], hosts[1]
	e := newPlaneEnv(t, config.NetworkVXLAN, vxlanStack, func(c *config.Config) {
		c.Server.NodeGracePeriod = 30 * time.Second
		c.Server.OrphanGrace = time.Second // an old server: unknown ends are stale at once
	})
	stopSvc := nodeAgent(t, e, "svc-node", svcHost)
	stopProxy := nodeAgent(t, e, "proxy-node", proxyHost)
	echoServer(t, svcHost.Listen(t, "tcp", "0.0.0.0:8080"))
	e.waitDefined("web", "proxy-node")
	e.registerReplica("web-1", "web", "svc-node", svcHost.Underlay.String(), 8080)

	var first interface {
		GetUpstreamIp() string
		GetSessionId() string
		GetLeaseId() string
		GetNetId() uint32
	}
	eventually(t, 30*time.Second, "a session", func() bool {
		r, err := e.proxy("198.51.100.1", "web", "proxy-node")
		if err == nil {
			first = r
		}
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := proxyHost.Dial(ctx, "", net.JoinHostPort(first.GetUpstreamIp(), "8080"))
	if err != nil {
		t.Fatalf("dial through the tunnel: %v", err)
	}
	defer conn.Close()
	roundTrip(t, conn)

	// What the earlier run also left on the service host: a complete end no session holds
	// (stale) and a half-built one (a bridge without its VXLAN device).
	const staleID, halfID = 4000, 4001
	other, err := overlay.New(overlay.Config{NetNS: svcHost.NS})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Setup(ctx, overlay.End{NetID: staleID, Side: overlay.SideService, Local: svcHost.Underlay,
		Remote: proxyHost.Underlay}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Setup(ctx, overlay.End{NetID: halfID, Side: overlay.SideService, Local: svcHost.Underlay,
		Remote: proxyHost.Underlay}); err != nil {
		t.Fatal(err)
	}
	other.Close()
	sh := svcHost.Handle(t)
	if l, err := sh.LinkByName(overlay.NamesFor(halfID, overlay.SideService).VXLAN); err != nil {
		t.Fatal(err)
	} else if err := sh.LinkDel(l); err != nil {
		t.Fatal(err)
	}

	// The service node's agent stops; the kernel keeps carrying the connection.
	stopSvc(how)
	roundTrip(t, conn)
	if names := linkNames(t, svcHost); !slices.Contains(names, overlay.NamesFor(first.GetNetId(), overlay.SideService).VXLAN) {
		t.Fatalf("the stopped agent removed the live end: %v", names)
	}
	nodeAgent(t, e, "svc-node", svcHost)
	live := overlay.NamesFor(first.GetNetId(), overlay.SideService)
	stale := overlay.NamesFor(staleID, overlay.SideService)
	eventually(t, 20*time.Second, "the stale and half-built ends removed", func() bool {
		names := linkNames(t, svcHost)
		return !slices.Contains(names, stale.Bridge) && !slices.Contains(names, stale.VXLAN) &&
			!slices.Contains(names, overlay.NamesFor(halfID, overlay.SideService).Bridge)
	})
	if names := linkNames(t, svcHost); !slices.Contains(names, live.Bridge) || !slices.Contains(names, live.VXLAN) {
		t.Fatalf("the live session's end was not kept: %v", names)
	}
	roundTrip(t, conn)
	ss := e.sessions()
	if len(ss) != 1 || ss[0]["id"] != first.GetSessionId() || ss[0]["state"] != "active" || ss[0]["uses"] != float64(1) {
		t.Fatalf("sessions after the service node's agent restarted: %v", ss)
	}
	if ev := e.eventsOf(events.SessionTornDown); len(ev) != 0 {
		t.Fatalf("sessions torn down: %+v", ev)
	}

	// The proxy node's agent stops and comes back: its end stays, its old use is released.
	setupsBefore := len(e.eventsOf(events.SessionCreated))
	stopProxy(how)
	roundTrip(t, conn)
	nodeAgent(t, e, "proxy-node", proxyHost)
	eventually(t, 20*time.Second, "the old process's use released", func() bool {
		ss := e.sessions()
		return len(ss) == 1 && ss[0]["uses"] == float64(0)
	})
	// A new connection of the same client (what a user does after the relay's reset) joins the
	// kept session: same tunnel, nothing built.
	again, err := e.proxy("198.51.100.1", "web", "proxy-node")
	if err != nil || !again.Reused || again.SessionId != first.GetSessionId() || again.NetId != first.GetNetId() {
		t.Fatalf("call after the proxy node's restart: %+v %v", again, err)
	}
	if n := len(e.eventsOf(events.SessionCreated)); n != setupsBefore {
		t.Fatalf("%d sessions created after the restarts", n-setupsBefore)
	}
	proxyEnd := overlay.NamesFor(first.GetNetId(), overlay.SideProxy)
	if names := linkNames(t, proxyHost); !slices.Contains(names, proxyEnd.Bridge) || !slices.Contains(names, proxyEnd.VXLAN) {
		t.Fatalf("the proxy end was not kept: %v", names)
	}
	roundTrip(t, conn)
	conn.Close()

	// Once the last use ends the session idles out and both hosts are clean.
	e.release(again.LeaseId, "proxy-node")
	eventually(t, 20*time.Second, "idle teardown", func() bool { return len(e.sessions()) == 0 })
	for _, h := range hosts {
		eventually(t, 10*time.Second, "no tunnel device on "+h.Name, func() bool {
			for _, n := range linkNames(t, h) {
				if _, _, ok := overlay.ParseName(n); ok {
					return false
				}
			}
			return true
		})
	}
	if ev := e.eventsOf(events.SessionTornDown); len(ev) != 1 || ev[0].Fields["reason"] != "idle_timeout" {
		t.Fatalf("session_torn_down events: %+v", ev)
	}
}

// sessionUp builds a session of "web" for the proxy host and a connection through its tunnel.
func sessionUp(t *testing.T, e *planeEnv, proxyHost *overlaytest.Host) (netID uint32, conn net.Conn) {
	t.Helper()
	var id uint32
	var upstream string
	eventually(t, 30*time.Second, "a session", func() bool {
		r, err := e.proxy("198.51.100.1", "web", "proxy-node")
		if err == nil {
			id, upstream = r.GetNetId(), r.GetUpstreamIp()
		}
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := proxyHost.Dial(ctx, "", net.JoinHostPort(upstream, "8080"))
	if err != nil {
		t.Fatalf("dial through the tunnel: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	roundTrip(t, conn)
	return id, conn
}

// A service node whose agent stops gracefully and does not come back within
// server.node_grace_period: its ends kept carrying meanwhile, then the server tears its sessions
// down (node_gone) and the proxy host's end goes. The ends left on the service host stay until
// an agent starts there again: Recover keeps them, the Hello reports them, and the server, which
// has no session for them, removes them at once (stale). Nothing is left for good.
func TestProxy_NodeAgentStopPastGrace(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnsg", 2)
	svcHost, proxyHost := hosts[0], hosts[1]
	e := newPlaneEnv(t, config.NetworkVXLAN, vxlanStack, func(c *config.Config) {
		c.Server.NodeGracePeriod = 3 * time.Second
		c.Server.OrphanGrace = time.Second
	})
	stopSvc := nodeAgent(t, e, "svc-node", svcHost)
	nodeAgent(t, e, "proxy-node", proxyHost)
	echoServer(t, svcHost.Listen(t, "tcp", "0.0.0.0:8080"))
	e.waitDefined("web", "proxy-node")
	e.registerReplica("web-1", "web", "svc-node", svcHost.Underlay.String(), 8080)
	id, conn := sessionUp(t, e, proxyHost)

	stopSvc(stopGraceful)
	roundTrip(t, conn) // within the grace period the tunnel carries
	eventually(t, 20*time.Second, "the session torn down after the grace period", func() bool {
		return len(e.sessions()) == 0
	})
	if ev := e.eventsOf(events.SessionTornDown); len(ev) != 1 || ev[0].Fields["reason"] != "node_gone" {
		t.Fatalf("session_torn_down events: %+v", ev)
	}
	eventually(t, 10*time.Second, "the proxy host's end removed", func() bool { return len(tunnelDevices(t, proxyHost)) == 0 })
	svcEnd := overlay.NamesFor(id, overlay.SideService)
	if devs := tunnelDevices(t, svcHost); !slices.Contains(devs, svcEnd.Bridge) || !slices.Contains(devs, svcEnd.VXLAN) {
		t.Fatalf("the service host's end (no agent to remove it) should still be there: %v", devs)
	}

	nodeAgent(t, e, "svc-node", svcHost)
	eventually(t, 20*time.Second, "the end left behind removed once an agent starts", func() bool {
		return len(tunnelDevices(t, svcHost)) == 0
	})
}

// `nullnet leave` on a service node removes its ends at once (the connection through them
// ends) whatever client.keep_tunnels_on_stop says; the server tears the session down once the
// node stays away past the grace period, and both hosts are clean.
func TestProxy_NodeAgentLeaveRemovesTunnels(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnlv", 2)
	svcHost, proxyHost := hosts[0], hosts[1]
	e := newPlaneEnv(t, config.NetworkVXLAN, vxlanStack, func(c *config.Config) {
		c.Server.NodeGracePeriod = 3 * time.Second
	})
	stopSvc := nodeAgent(t, e, "svc-node", svcHost)
	nodeAgent(t, e, "proxy-node", proxyHost)
	echoServer(t, svcHost.Listen(t, "tcp", "0.0.0.0:8080"))
	e.waitDefined("web", "proxy-node")
	e.registerReplica("web-1", "web", "svc-node", svcHost.Underlay.String(), 8080)
	sessionUp(t, e, proxyHost)

	stopSvc(stopLeave)
	if devs := tunnelDevices(t, svcHost); len(devs) != 0 {
		t.Fatalf("the leaving agent left %v", devs)
	}
	eventually(t, 20*time.Second, "the session torn down", func() bool { return len(e.sessions()) == 0 })
	eventually(t, 10*time.Second, "the proxy host's end removed", func() bool { return len(tunnelDevices(t, proxyHost)) == 0 })
}

// A node declared gone comes back with an end of a net id that meanwhile went to a session
// between two other hosts (here the pool holds a single id, so the id is reused at once): the
// server removes the returning node's end (reason stale) and leaves the id and the other
// session alone.
func TestProxy_NodeReturnsWithReusedNetID(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnru", 3)
	hostA, hostB, proxyHost := hosts[0], hosts[1], hosts[2]
	e := newPlaneEnv(t, config.NetworkVXLAN, vxlanStack, func(c *config.Config) {
		c.Server.NodeGracePeriod = 2 * time.Second
		c.Server.OrphanGrace = time.Second
		c.Server.NetIDMin, c.Server.NetIDMax = 300, 300
	})
	stopA := nodeAgent(t, e, "node-a", hostA)
	nodeAgent(t, e, "node-b", hostB)
	nodeAgent(t, e, "proxy-node", proxyHost)
	echoServer(t, hostA.Listen(t, "tcp", "0.0.0.0:8080"))
	echoServer(t, hostB.Listen(t, "tcp", "0.0.0.0:8080"))
	e.waitDefined("web", "proxy-node")
	e.registerReplica("web-a", "web", "node-a", hostA.Underlay.String(), 8080)
	id, _ := sessionUp(t, e, proxyHost)
	if id != 300 {
		t.Fatalf("net id %d, want 300 (the only one)", id)
	}

	// node-a's agent stops and stays away past the grace period: the session goes, its end on
	// node-a stays in the kernel.
	stopA(stopGraceful)
	eventually(t, 20*time.Second, "the session torn down", func() bool { return len(e.sessions()) == 0 })
	if err := e.client.Agent().ServiceDeregister("web-a"); err != nil {
		t.Fatal(err)
	}
	e.registerReplica("web-b", "web", "node-b", hostB.Underlay.String(), 8080)
	var conn net.Conn
	eventually(t, 20*time.Second, "a session to node-b on net id 300", func() bool {
		ss := e.sessions()
		if len(ss) == 1 && ss[0]["net_id"] == float64(300) {
			return true
		}
		if len(ss) == 0 {
			if _, err := e.proxy("198.51.100.1", "web", "proxy-node"); err != nil {
				t.Logf("proxy: %v", err)
			}
		}
		return false
	})
	_, conn = sessionUp(t, e, proxyHost) // the same session: a second use
	aEnd := overlay.NamesFor(300, overlay.SideService)
	if devs := tunnelDevices(t, hostA); !slices.Contains(devs, aEnd.VXLAN) {
		t.Fatalf("node-a should still hold its old end: %v", devs)
	}

	// node-a's agent comes back and reports its old end of 300.
	nodeAgent(t, e, "node-a", hostA)
	eventually(t, 20*time.Second, "node-a's stale end removed", func() bool { return len(tunnelDevices(t, hostA)) == 0 })
	roundTrip(t, conn)
	ss := e.sessions()
	if len(ss) != 1 || ss[0]["state"] != "active" || ss[0]["net_id"] != float64(300) {
		t.Fatalf("sessions after node-a came back: %v", ss)
	}
	if devs := tunnelDevices(t, hostB); !slices.Contains(devs, aEnd.VXLAN) {
		t.Fatalf("node-b lost its end of the live session: %v", devs)
	}
}
