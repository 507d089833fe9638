package server_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// connCounter wraps the Consul client's dialer and counts the TCP connections open at once:
// what Consul's http_max_conns_per_client (200) limits.
type connCounter struct {
	mu          sync.Mutex
	open, peak  int
	dialed      int
	dialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

type countedConn struct {
	net.Conn
	once sync.Once
	c    *connCounter
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.c.mu.Lock()
		c.c.open--
		c.c.mu.Unlock()
	})
	return c.Conn.Close()
}

func (c *connCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := c.dialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.open++
	c.dialed++
	c.peak = max(c.peak, c.open)
	c.mu.Unlock()
	return &countedConn{Conn: conn, c: c}, nil
}

func (c *connCounter) stats() (open, peak, dialed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open, c.peak, c.dialed
}

// countingClient is a Consul client with the production transport (api.DefaultConfig's
// pooled transport) whose dialer counts connections.
func countingClient(t *testing.T, srv *consultest.Server, token string) (*api.Client, *connCounter) {
	t.Helper()
	cfg := srv.Config()
	cfg.Token = token
	tr := api.DefaultConfig().Transport
	cc := &connCounter{dialContext: tr.DialContext}
	tr.DialContext = cc.dial
	cfg.Transport = tr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return c, cc
}

// scaleStack is one stack with n tcp entry points on ports from 20000.
func scaleStack(n int) string {
	var b strings.Builder
	b.WriteString("stack \"scale\" {\n")
	for i := range n {
		fmt.Fprintf(&b, "  service \"svc-%05d.scale\" {\n    protocol    = \"tcp\"\n    listen_port = %d\n    timeout     = \"30s\"\n  }\n", i, 20000+i)
	}
	b.WriteString("}\n")
	return b.String()
}

// scaleServer runs a server on dir with a counting Consul client, in direct mode so that a
// Proxy call resolves a replica without tunnels.
func scaleServer(t *testing.T, srv *consultest.Server, dir, token string, logger hclog.Logger) (*runningServer, *connCounter, *events.Store) {
	t.Helper()
	client, cc := countingClient(t, srv, token)
	cfg := config.Default()
	cfg.Server.Enabled = true
	cfg.Server.StacksDir = dir
	cfg.Server.Network = config.NetworkDirect
	cfg.Server.ReloadDebounce = 50 * time.Millisecond
	ev := events.New(1000, logger)
	return runServer(t, server.Config{Agent: cfg, Consul: client, Events: ev, Logger: logger}), cc, ev
}

// sizes returns the sizes of every bundle received so far.
func (s *subscriber) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, len(s.bundles))
	for i, b := range s.bundles {
		out[i] = len(b.GetMappings())
	}
	return out
}

// waitSize waits for a bundle of n mappings.
func (s *subscriber) waitSize(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if sz := s.sizes(); len(sz) > 0 && sz[len(sz)-1] == n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no table of %d mappings within %s; sizes received: %v", n, timeout, s.sizes())
}

func subscribeTo(t *testing.T, rs *runningServer) *subscriber {
	e := &stackEnv{t: t, grpc: rs.conn}
	return e.subscribe()
}

// Thousands of stack services: validated, mirrored in transactions and published to a proxy
// as one complete table, with a constant handful of connections to Consul (one blocking
// query per service used to need one connection each, and Consul refuses a client past 200).
// Deleting the file and restarting the server converge too, and a replica among them resolves.
func TestStacks_ThousandsOfServices(t *testing.T) {
	const n = 2000
	const maxConns = 8
	c := consultest.Start(t)
	admin := c.Client(t)
	logger := hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.LevelFromString(os.Getenv("NULLNET_TEST_LOG")), Output: testWriter{t}})
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/scale.hcl", []byte(scaleStack(n)), 0o644); err != nil {
		t.Fatal(err)
	}
	// 100 of the services have a replica (with a health check) on another node, so the replica
	// watcher reads them while the table is being built.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for i := range 100 {
		name := fmt.Sprintf("svc-%05d.scale", i)
		_, err := admin.Catalog().Register(&api.CatalogRegistration{Node: "scale-node", Address: "127.0.0.1",
			Service: &api.AgentService{ID: name + "-1", Service: name, Port: port, Meta: map[string]string{server.MetaNode: "node-a"}},
			Check:   &api.AgentCheck{CheckID: name + "-check", Name: "up", Status: api.HealthPassing, ServiceID: name + "-1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}

	started := time.Now()
	rs, cc, _ := scaleServer(t, c, dir, "", logger)
	sub := subscribeTo(t, rs)
	sub.waitSize(t, n, 60*time.Second)
	t.Logf("%d services published to a subscriber %s after start", n, time.Since(started).Round(time.Millisecond))

	ingress := pb.NewIngressClient(rs.conn)
	eventually(t, 20*time.Second, "a replica among thousands resolves", func() bool {
		r, err := ingress.Proxy(context.Background(), &pb.ProxyRequest{ClientIp: "203.0.113.9", Service: "svc-00042.scale",
			ProxyNode: "proxy-1", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP})
		return err == nil && int(r.UpstreamPort) == port
	})
	_, peak, dialed := cc.stats()
	t.Logf("first server: peak %d connections to Consul, %d dialed", peak, dialed)
	if peak > maxConns {
		t.Errorf("peak of %d concurrent connections to Consul, want <= %d", peak, maxConns)
	}

	// The file goes: every definition is removed and the table empties in one step.
	if err := os.Remove(dir + "/scale.hcl"); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	sub.waitSize(t, 0, 60*time.Second)
	t.Logf("%d services removed in %s", n, time.Since(removed).Round(time.Millisecond))
	list, _, err := admin.Catalog().NodeServiceList(server.DefinitionsNode, nil)
	if err != nil || (list != nil && len(list.Services) != 0) {
		t.Fatalf("definitions left in Consul: %v", err)
	}
	for i, sz := range sub.sizes() {
		if sz != 0 && sz != n {
			t.Errorf("bundle %d had %d mappings: a partial table was published (%v)", i, sz, sub.sizes())
			break
		}
	}

	// Back, then a server restart: the new server converges on the same table.
	if err := os.WriteFile(dir+"/scale.hcl", []byte(scaleStack(n)), 0o644); err != nil {
		t.Fatal(err)
	}
	sub.waitSize(t, n, 60*time.Second)
	rs.stop()
	rs2, cc2, _ := scaleServer(t, c, dir, "", logger)
	sub2 := subscribeTo(t, rs2)
	sub2.waitSize(t, n, 60*time.Second)
	for i, sz := range sub2.sizes() {
		if sz != n {
			t.Errorf("after restart, bundle %d had %d mappings (%v)", i, sz, sub2.sizes())
		}
	}
	for _, cnt := range []*connCounter{cc, cc2} {
		if _, peak, _ := cnt.stats(); peak > maxConns {
			t.Errorf("peak of %d concurrent connections to Consul, want <= %d", peak, maxConns)
		}
	}
	// Nothing keeps failing: no 429 loop, no error event.
	resp, err := http.Get(rs2.http.URL + "/v1/port-mappings")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/port-mappings: %v %v", resp, err)
	}
	resp.Body.Close()
}
