package server_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/client"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/nullnet/nullnet/config"
)

// runClient runs the real client role (agent/client) for a host, its overlay.Manager inside the
// host's namespace, connected to the test server; the returned func stops it (as SIGTERM does).
func runClient(t *testing.T, e *planeEnv, name string, h *overlaytest.Host) func() {
	t.Helper()
	mgr, err := overlay.New(overlay.Config{NetNS: h.NS})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName, cfg.AdvertiseAddr, cfg.Client.Enabled = name, h.Underlay.String(), true
	logger := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: testWriter{t}})
	c, err := client.New(client.Config{Agent: cfg, Conn: e.grpc, Overlay: mgr, Logger: logger,
		Events: events.NewReporter(name, e.grpc, nil, logger)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(func() { stop(); mgr.Close() })
	return stop
}

// The same path with the product's node agents: the client role builds the ends on the service
// host and the proxy host, traffic flows through the returned upstream, and the release starts
// the 2 s idle timeout after which both hosts are clean.
func TestProxy_VXLANRealClients(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnss", 2)
	e := newPlaneEnv(t, config.NetworkVXLAN, vxlanStack, nil)
	runClient(t, e, "svc-node", hosts[0])
	runClient(t, e, "proxy-node", hosts[1])
	echoServer(t, hosts[0].Listen(t, "tcp", "0.0.0.0:8080"))
	e.waitDefined("web", "proxy-node") // before the replica exists, so the probe opens no session
	e.registerReplica("web-1", "web", "svc-node", hosts[0].Underlay.String(), 8080)

	var first, second interface {
		GetUpstreamIp() string
		GetSessionId() string
		GetLeaseId() string
		GetReused() bool
	}
	eventually(t, 30*time.Second, "a session", func() bool {
		r, err := e.proxy("198.51.100.1", "web", "proxy-node")
		if err != nil {
			t.Logf("proxy: %v", err)
			return false
		}
		first = r
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := hosts[1].Dial(ctx, "", net.JoinHostPort(first.GetUpstreamIp(), strconv.Itoa(8080)))
	if err != nil {
		t.Fatalf("dial through the tunnel: %v", err)
	}
	roundTrip(t, conn)
	conn.Close()
	r, err := e.proxy("198.51.100.1", "web", "proxy-node")
	if err != nil || !r.Reused || r.SessionId != first.GetSessionId() {
		t.Fatalf("second call: %+v %v", r, err)
	}
	second = r
	e.release(first.GetLeaseId(), "proxy-node")
	e.release(second.GetLeaseId(), "proxy-node")
	eventually(t, 20*time.Second, "idle teardown", func() bool { return len(e.sessions()) == 0 })
	for _, h := range hosts {
		links, err := h.Handle(t).LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if _, _, ok := overlay.ParseName(l.Attrs().Name); ok {
				t.Fatalf("%s still has %s", h.Name, l.Attrs().Name)
			}
		}
	}
}
