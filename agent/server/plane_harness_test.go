package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// planeEnv is one server (network vxlan or direct) against a real Consul, its gRPC and HTTP
// APIs on real sockets, and a stacks directory.
type planeEnv struct {
	t       *testing.T
	consul  *consultest.Server
	client  *api.Client
	events  *events.Store
	srv     *server.Server
	grpc    *grpc.ClientConn
	ingress pb.IngressClient
	http    *httptest.Server
}

func newPlaneEnv(t *testing.T, network, stack string, tune func(*config.Config)) *planeEnv {
	t.Helper()
	c := consultest.Start(t)
	e := &planeEnv{t: t, consul: c, client: c.Client(t)}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.hcl"), []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	startServerRole(t, e, dir, func(cfg *config.Config) {
		cfg.Server.Network = network
		if tune != nil {
			tune(cfg)
		}
	})
	return e
}

// startServerRole starts one server role on the env's Consul and points the env's clients at
// it; the returned stop ends it (its sessions are left in place, as a killed server's are).
func startServerRole(t *testing.T, e *planeEnv, dir string, tune func(*config.Config)) (stop func()) {
	t.Helper()
	cfg := config.Default()
	cfg.NodeName = "nnss-server"
	cfg.Server.Enabled = true
	cfg.Server.StacksDir = dir
	cfg.Server.Network = config.NetworkVXLAN
	cfg.Server.NodeGracePeriod = time.Second
	if tune != nil {
		tune(cfg)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.Debug, Output: testWriter{t}})
	e.events = events.New(10000, logger)
	rs := runServer(t, server.Config{Agent: cfg, Consul: e.client, Events: e.events, Logger: logger,
		LockKey: "nullnet/" + cfg.NodeName + "-leader"})
	e.srv, e.http, e.grpc, e.ingress = rs.srv, rs.http, rs.conn, pb.NewIngressClient(rs.conn)
	return rs.stop
}

// waitDefined polls until the server knows service (any answer but NotFound / "not read").
func (e *planeEnv) waitDefined(service, proxyNode string) {
	e.t.Helper()
	eventually(e.t, 30*time.Second, "service "+service+" defined", func() bool {
		_, err := e.ingress.Proxy(context.Background(), &pb.ProxyRequest{ClientIp: "192.0.2.254", Service: service, ProxyNode: proxyNode})
		st := status.Convert(err)
		return st.Code() != codes.NotFound && !strings.Contains(st.Message(), "not read the stack definitions")
	})
}

func (e *planeEnv) proxy(client, service, proxyNode string) (*pb.ProxyResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.ingress.Proxy(ctx, &pb.ProxyRequest{ClientIp: client, Service: service, ProxyNode: proxyNode,
		Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP})
}

func (e *planeEnv) release(lease, proxyNode string) {
	e.t.Helper()
	if _, err := e.ingress.ReleaseProxy(context.Background(), &pb.ReleaseProxyRequest{LeaseId: lease, ProxyNode: proxyNode}); err != nil {
		e.t.Fatalf("ReleaseProxy: %v", err)
	}
}

// registerReplica registers a replica with a TTL check (passing) served by nullnet node node.
func (e *planeEnv) registerReplica(id, service, node, addr string, port int) {
	e.t.Helper()
	err := e.client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: service, Address: addr,
		Port: port, Meta: map[string]string{server.MetaNode: node},
		Check: &api.AgentServiceCheck{CheckID: "nnss-" + id, TTL: "1h", Status: api.HealthPassing}})
	if err != nil {
		e.t.Fatalf("registering replica %s: %v", id, err)
	}
}

func (e *planeEnv) setHealth(id, state string) {
	e.t.Helper()
	if err := e.client.Agent().UpdateTTL("nnss-"+id, "test", state); err != nil {
		e.t.Fatalf("updating check of %s: %v", id, err)
	}
}

// sessions reads GET /v1/sessions.
func (e *planeEnv) sessions() []map[string]any {
	e.t.Helper()
	resp, err := http.Get(e.http.URL + "/v1/sessions")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// eventsOf returns the events of one kind.
func (e *planeEnv) eventsOf(kind string) []events.Event {
	all, _ := e.events.Since(0)
	var out []events.Event
	for _, ev := range all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func code(err error) codes.Code { return status.Code(err) }

// echoServer answers every line with the same line, until the test ends.
func echoServer(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

// testNode is a node agent's control channel driving a real overlay.Manager inside a
// network namespace: what the client role does, reduced to the protocol.
type testNode struct {
	name      string
	host      *overlaytest.Host
	mgr       *overlay.Manager
	cancel    context.CancelFunc
	done      chan struct{}
	setups    atomic.Int32
	teardowns atomic.Int32
}

func startNode(t *testing.T, e *planeEnv, name string, host *overlaytest.Host, ends ...*pb.OverlayEndRef) *testNode {
	t.Helper()
	mgr, err := overlay.New(overlay.Config{NetNS: host.NS})
	if err != nil {
		t.Fatalf("overlay manager in %s: %v", host.Name, err)
	}
	t.Cleanup(mgr.Close)
	n := &testNode{name: name, host: host, mgr: mgr, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	stream, err := pb.NewControlClient(e.grpc).ControlChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Hello{Hello: &pb.Hello{NodeName: name,
		UnderlayAddr: host.Underlay.String(), Roles: []string{"client"}, UnderlayMtu: 1500, ActiveEnds: ends}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("no welcome: %v %v", m, err)
	}
	var sendMu sync.Mutex
	ack := func(id string, err error) {
		a := &pb.CommandAck{CommandId: id}
		if err != nil {
			a.Error = err.Error()
		}
		sendMu.Lock()
		defer sendMu.Unlock()
		_ = stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Ack{Ack: a}})
	}
	side := func(s pb.OverlaySide) overlay.Side {
		if s == pb.OverlaySide_OVERLAY_SIDE_SERVICE {
			return overlay.SideService
		}
		return overlay.SideProxy
	}
	var wg sync.WaitGroup
	go func() {
		defer close(n.done)
		defer wg.Wait()
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch {
				case m.GetOverlaySetup() != nil:
					s := m.GetOverlaySetup()
					n.setups.Add(1)
					_, err := mgr.Setup(ctx, overlay.End{NetID: s.NetId, Side: side(s.Side),
						Local: netip.MustParseAddr(s.LocalUnderlay), Remote: netip.MustParseAddr(s.RemoteUnderlay), MTU: int(s.Mtu)})
					ack(s.CommandId, err)
				case m.GetOverlayTeardown() != nil:
					s := m.GetOverlayTeardown()
					n.teardowns.Add(1)
					ack(s.CommandId, mgr.Teardown(ctx, s.NetId, side(s.Side)))
				}
			}()
		}
	}()
	t.Cleanup(n.stop)
	return n
}

// stop ends the node's control channel, as a killed agent would.
func (n *testNode) stop() {
	n.cancel()
	<-n.done
}

// devices lists the tunnel devices (by their names) in the node's namespace.
func (n *testNode) devices(t *testing.T) []string {
	t.Helper()
	links, err := n.host.Handle(t).LinkList()
	if err != nil {
		t.Fatalf("listing devices in %s: %v", n.host.Name, err)
	}
	var out []string
	for _, l := range links {
		if _, _, ok := overlay.ParseName(l.Attrs().Name); ok {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}
