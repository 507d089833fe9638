package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// stackEnv is one server role against a real Consul, with its gRPC and HTTP APIs on real
// sockets and a stacks directory the test writes into.
type stackEnv struct {
	t      *testing.T
	consul *consultest.Server
	client *api.Client
	dir    string
	events *events.Store
	srv    *server.Server
	grpc   *grpc.ClientConn
	http   *httptest.Server
}

func newStackEnv(t *testing.T, consulSrv *consultest.Server, files map[string]string) *stackEnv {
	t.Helper()
	if consulSrv == nil {
		consulSrv = consultest.Start(t)
	}
	e := &stackEnv{t: t, consul: consulSrv, client: consulSrv.Client(t), dir: t.TempDir()}
	for name, src := range files {
		e.write(name, src)
	}
	cfg := config.Default()
	cfg.Server.Enabled = true
	cfg.Server.StacksDir = e.dir
	cfg.Server.ReloadDebounce = 50 * time.Millisecond
	logger := hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.LevelFromString(os.Getenv("NULLNET_TEST_LOG")), Output: testWriter{t}})
	e.events = events.New(1000, logger)
	rs := runServer(t, server.Config{Agent: cfg, Consul: e.client, Events: e.events, Logger: logger})
	e.srv, e.http, e.grpc = rs.srv, rs.http, rs.conn
	return e
}

// runningServer is one server role on real sockets: gRPC on 127.0.0.1:0, its HTTP API on an
// httptest server, and a gRPC client connection to it.
type runningServer struct {
	srv  *server.Server
	conn *grpc.ClientConn
	http *httptest.Server
	// stop ends it (idempotent; also run at the end of the test).
	stop func()
}

func runServer(t *testing.T, cfg server.Config) *runningServer {
	t.Helper()
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.RegisterGRPC(g)
	go func() { _ = g.Serve(lis) }()
	mux := http.NewServeMux()
	srv.RegisterHTTP(mux)
	hs := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceFunc(func() {
		_ = conn.Close()
		hs.Close()
		g.Stop()
		cancel()
		<-done
	})
	t.Cleanup(stop)
	return &runningServer{srv: srv, conn: conn, http: hs, stop: stop}
}

// testWriter sends logs to t.Log, so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (e *stackEnv) write(name, src string) {
	e.t.Helper()
	// Write-then-rename, as editors and config management do, so a reader never sees half a file.
	tmp := filepath.Join(e.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *stackEnv) remove(name string) {
	e.t.Helper()
	if err := os.Remove(filepath.Join(e.dir, name)); err != nil {
		e.t.Fatal(err)
	}
}

// subscriber records every bundle a WatchPortMappings stream delivers.
type subscriber struct {
	mu      sync.Mutex
	bundles []*pb.PortMappingBundle
	at      []time.Time
	notify  chan struct{}
	err     error
}

func (e *stackEnv) subscribe() *subscriber {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewIngressClient(e.grpc).WatchPortMappings(ctx, &pb.WatchPortMappingsRequest{ProxyNode: "test-proxy"})
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	s := &subscriber{notify: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			b, err := stream.Recv()
			s.mu.Lock()
			if err != nil {
				s.err = err
				s.mu.Unlock()
				return
			}
			s.bundles = append(s.bundles, b)
			s.at = append(s.at, time.Now())
			s.mu.Unlock()
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done })
	return s
}

// render is a bundle's table as "proto/port=service:timeout" sorted as sent.
func render(b *pb.PortMappingBundle) string {
	var parts []string
	for _, m := range b.GetMappings() {
		proto := strings.ToLower(strings.TrimPrefix(m.GetProtocol().String(), "SERVICE_PROTOCOL_"))
		parts = append(parts, fmt.Sprintf("%s/%d=%s:%d", proto, m.GetListenPort(), m.GetService(), m.GetIdleTimeoutSecs()))
	}
	return strings.Join(parts, " ")
}

// waitTable waits until the latest bundle renders as want and returns when it arrived.
func (s *subscriber) waitTable(t *testing.T, want string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		n := len(s.bundles)
		var got string
		var at time.Time
		if n > 0 {
			got, at = render(s.bundles[n-1]), s.at[n-1]
		}
		err := s.err
		s.mu.Unlock()
		if n > 0 && got == want {
			return at
		}
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("table is %q after %v, want %q", got, timeout, want)
		}
	}
}

func (s *subscriber) all() []*pb.PortMappingBundle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.PortMappingBundle(nil), s.bundles...)
}

// definitions returns the nullnet definitions in the catalog by service name.
func (e *stackEnv) definitions() map[string]*api.AgentService {
	e.t.Helper()
	list, _, err := e.client.Catalog().NodeServiceList(server.DefinitionsNode, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]*api.AgentService{}
	if list != nil {
		for _, s := range list.Services {
			out[s.Service] = s
		}
	}
	return out
}

func (e *stackEnv) waitCatalog(what string, cond func(map[string]*api.AgentService) bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		defs := e.definitions()
		if cond(defs) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for catalog: %s; have %v", what, defs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEvent waits for an event of kind after index and returns it.
func (e *stackEnv) waitEvent(kind string, after uint64) events.Event {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		evs, _ := e.events.Wait(context.Background(), after, time.Until(deadline))
		for _, ev := range evs {
			if ev.Kind == kind {
				return ev
			}
			after = ev.Index
		}
	}
	e.t.Fatalf("no %s event", kind)
	return events.Event{}
}

func (e *stackEnv) getJSON(path string, out any) http.Header {
	e.t.Helper()
	resp, err := http.Get(e.http.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		e.t.Fatal(err)
	}
	return resp.Header
}
