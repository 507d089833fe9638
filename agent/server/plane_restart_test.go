package server_test

import (
	"context"
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
)

// crashableClient runs the real client role for a host and returns a stop that leaves every
// device in the kernel, as kill -9 does (client.Config.LeaveEnds).
func crashableClient(t *testing.T, e *planeEnv, name string, h *overlaytest.Host) (crash func()) {
	t.Helper()
	mgr, err := overlay.New(overlay.Config{NetNS: h.NS, SpareBridges: 4})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName, cfg.AdvertiseAddr, cfg.Client.Enabled = name, h.Underlay.String(), true
	logger := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: testWriter{t}})
	c, err := client.New(client.Config{Agent: cfg, Conn: e.grpc, Overlay: mgr, Logger: logger, LeaveEnds: true,
		Events: events.NewReporter(name, e.grpc, nil, logger)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(runCtx) }()
	stopped := false
	crash = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			mgr.Close()
		}
	}
	t.Cleanup(crash)
	return crash
}

// linkNames lists a host's devices.
func linkNames(t *testing.T, h *overlaytest.Host) []string {
	t.Helper()
	links, err := h.Handle(t).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		out = append(out, l.Attrs().Name)
	}
	return out
}

// Restarting a node's agent (service side, then proxy side) keeps the tunnels of live sessions:
// the restarted agent keeps the complete ends it finds (an earlier run's), reports them in
// Hello.active_ends, and the server keeps the sessions they belong to; an end the server does not
// know is torn down at once (the server has run past its orphan grace), incomplete leftovers are
// removed at start. A restarted proxy node's old uses are released (they died with its process),
// so the session ends after its timeout once the last new use is gone, and nothing is left.
func TestProxy_NodeAgentRestartKeepsTunnels(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnrs", 2)
	svcHost, proxyHost := hosts[0], hosts[1]
	e := newPlaneEnv(t, config.NetworkVXLAN, vxlanStack, func(c *config.Config) {
		c.Server.NodeGracePeriod = 30 * time.Second
		c.Server.OrphanGrace = time.Second // an old server: unknown ends are stale at once
	})
	crashSvc := crashableClient(t, e, "svc-node", svcHost)
	crashProxy := crashableClient(t, e, "proxy-node", proxyHost)
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

	// The service node's agent dies; the kernel keeps carrying the connection.
	crashSvc()
	roundTrip(t, conn)
	crashableClient(t, e, "svc-node", svcHost)
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

	// The proxy node's agent dies and comes back: its end stays, its old use is released.
	setupsBefore := len(e.eventsOf(events.SessionCreated))
	crashProxy()
	roundTrip(t, conn)
	crashableClient(t, e, "proxy-node", proxyHost)
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
