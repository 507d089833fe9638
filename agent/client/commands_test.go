package client

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// nodeIn is a client whose tunnel ends are built, for real, inside host h.
func nodeIn(t *testing.T, h *overlaytest.Host) *Client {
	t.Helper()
	m, err := overlay.New(overlay.Config{NetNS: h.NS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	cfg := &config.Config{NodeName: h.Name, AdvertiseAddr: h.Underlay.String()}
	c, err := New(Config{Agent: cfg, Overlay: m, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestExecuteBuildsRealTunnel drives both ends of a tunnel through the client's command API
// (what the control channel calls) with the kernel doing the work: the ack comes back once the
// devices exist, traffic flows, and the teardown ack comes back once they are gone.
func TestExecuteBuildsRealTunnel(t *testing.T) {
	hosts := overlaytest.Hosts(t, "nnov", 2)
	ph, sh := hosts[0], hosts[1]
	proxyNode, svcNode := nodeIn(t, ph), nodeIn(t, sh)
	ctx := context.Background()
	const id = 909
	plan, _ := overlay.PlanFor(id)

	ack, err := svcNode.Execute(ctx, &pb.ServerMessage{Msg: &pb.ServerMessage_OverlaySetup{OverlaySetup: &pb.OverlaySetup{
		CommandId: "s1", NetId: id, Side: pb.OverlaySide_OVERLAY_SIDE_SERVICE,
		LocalUnderlay: sh.Underlay.String(), RemoteUnderlay: ph.Underlay.String(), Service: "echo"}}})
	if err != nil || ack.GetError() != "" || ack.GetCommandId() != "s1" || ack.GetDurationMicros() == 0 {
		t.Fatalf("service-side ack %v, %v", ack, err)
	}
	// The ack means the devices exist: check right away, no polling.
	if _, err := sh.Handle(t).LinkByName("vx_909_s"); err != nil {
		t.Fatalf("after the ack: %v", err)
	}
	ack, _ = proxyNode.Execute(ctx, &pb.ServerMessage{Msg: &pb.ServerMessage_OverlaySetup{OverlaySetup: &pb.OverlaySetup{
		CommandId: "p1", NetId: id, Side: pb.OverlaySide_OVERLAY_SIDE_PROXY,
		LocalUnderlay: ph.Underlay.String(), RemoteUnderlay: sh.Underlay.String(), Mtu: 1400}}})
	if ack.GetError() != "" {
		t.Fatalf("proxy-side ack %v", ack)
	}

	ln := sh.Listen(t, "tcp", "0.0.0.0:0")
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = c.Write([]byte("echo " + line))
	}()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var conn net.Conn
	for conn == nil {
		conn, err = ph.Dial(dctx, plan.ProxyBridge.Addr().String(), net.JoinHostPort(plan.ServiceBridge.Addr().String(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
		if err != nil {
			if dctx.Err() != nil {
				t.Fatalf("dial over the tunnel: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	_, _ = conn.Write([]byte("hi\n"))
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if got, err := bufio.NewReader(conn).ReadString('\n'); got != "echo hi\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	conn.Close()

	st := proxyNode.Status().(Status)
	if len(st.Ends) != 1 || st.Ends[0].NetID != id || st.Ends[0].Side != "proxy" || st.Ends[0].MTU != 1400 ||
		st.Ends[0].Bridge != plan.ProxyBridge.String() {
		t.Fatalf("status ends %+v", st.Ends)
	}

	for _, n := range []struct {
		c    *Client
		side pb.OverlaySide
		h    *overlaytest.Host
	}{{svcNode, pb.OverlaySide_OVERLAY_SIDE_SERVICE, sh}, {proxyNode, pb.OverlaySide_OVERLAY_SIDE_PROXY, ph}} {
		ack, _ := n.c.Execute(ctx, &pb.ServerMessage{Msg: &pb.ServerMessage_OverlayTeardown{OverlayTeardown: &pb.OverlayTeardown{
			CommandId: "t", NetId: id, Side: n.side}}})
		if ack.GetError() != "" {
			t.Fatalf("teardown ack %v", ack)
		}
		links, _ := n.h.Handle(t).LinkList()
		for _, l := range links {
			if _, _, ok := overlay.ParseMarker(l.Attrs().Alias); ok {
				t.Fatalf("%s: %s still exists after the teardown ack", n.h.Name, l.Attrs().Name)
			}
		}
		if st := n.c.Status().(Status); len(st.Ends) != 0 {
			t.Fatalf("status still lists %+v", st.Ends)
		}
	}
}
