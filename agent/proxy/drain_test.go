package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// tcpEcho starts a TCP echo server on loopback.
func tcpEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	return addrOf(t, ln.Addr())
}

// startIngress serves f on a real gRPC server and returns a client connection to it.
func startIngress(t *testing.T, srv pb.IngressServer) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterIngressServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// drainSetup is a proxy on a real gRPC Ingress with a TCP mapping to an echo server and an
// HTTP service whose handler holds each request until release is closed.
type drainSetup struct {
	tp       *testProxy
	f        *fakeIngress
	port     uint16
	httpAddr string
	started  chan struct{} // one value per request that reached the HTTP upstream
	release  chan struct{}
}

func newDrainSetup(t *testing.T, drain time.Duration) *drainSetup {
	t.Helper()
	d := &drainSetup{port: freePort(t), started: make(chan struct{}, 16), release: make(chan struct{})}
	httpUp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.started <- struct{}{}
		select {
		case <-d.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "slow answer done")
	})}
	go func() { _ = hs.Serve(httpUp) }()
	t.Cleanup(func() { hs.Close() })
	d.f = &fakeIngress{restart: make(chan struct{}), known: map[string]bool{}, released: map[string]int{},
		ups: map[string]netip.AddrPort{"redis": tcpEcho(t), "web": addrOf(t, httpUp.Addr())},
		table: &pb.PortMappingBundle{Version: 1, Mappings: []*pb.PortMapping{
			{Service: "redis", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: uint32(d.port), IdleTimeoutSecs: 600},
		}}}
	conn := startIngress(t, d.f)
	d.tp = startProxy(t, nil, func(a *config.Config, c *Config) {
		c.Conn = conn
		c.DisableHTTP = false
		a.Proxy.DrainTimeout = drain
	})
	d.tp.waitListening(t, TCP, d.port)
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return d.tp.http.Addr() != "" })
	d.httpAddr = d.tp.http.Addr()
	return d
}

// TestDrain: on Drain the listeners stop accepting, while 20 live TCP connections keep relaying
// until their clients close them and an HTTP request in flight gets its answer; the drain ends
// as soon as they are done (not at drain_timeout), and the stop that follows releases every
// use once and takes well under 2 s.
func TestDrain(t *testing.T) {
	d := newDrainSetup(t, 30*time.Second)
	var conns []net.Conn
	for i := range 20 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoMsg(t, c, fmt.Sprintf("before-%d", i))
		conns = append(conns, c)
	}
	type answer struct {
		code int
		body string
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+d.httpAddr+"/slow", nil)
		req.Host = "web"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, string(b), err}
	}()
	<-d.started

	drained := make(chan DrainResult, 1)
	go func() { drained <- d.tp.Drain(context.Background()) }()
	waitFor(t, 10*time.Second, "listeners closed by the drain", func() bool {
		closed := true
		for _, a := range []string{fmt.Sprintf("127.0.0.1:%d", d.port), d.httpAddr} {
			if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
				c.Close() // accepted just before the listener closed: a connection like the others
				closed = false
			}
		}
		return closed
	})
	if !d.tp.status().Draining {
		t.Errorf("status does not say draining")
	}
	// A port-table push during the drain opens nothing.
	d.tp.apply(2, Mapping{Protocol: TCP, Port: d.port, Service: "redis"})
	if _, ok := d.tp.listener(TCP, d.port); ok {
		t.Errorf("a push during the drain reopened the listener")
	}

	for i, c := range conns {
		echoMsg(t, c, fmt.Sprintf("during-drain-%d", i)) // still relayed
	}
	select {
	case r := <-drained:
		t.Fatalf("drain ended with connections open: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	for _, c := range conns {
		c.Close()
	}
	close(d.release)
	a := <-answered
	if a.err != nil || a.code != 200 || a.body != "slow answer done" {
		t.Fatalf("in-flight request during drain: %d %q %v", a.code, a.body, a.err)
	}
	var r DrainResult
	select {
	case r = <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not end once the connections and the request were done")
	}
	if r.TCPLeft != 0 || r.HTTPLeft != 0 || r.Took > 10*time.Second {
		t.Fatalf("drain result %+v", r)
	}
	t.Logf("drain took %s", r.Took)

	start := time.Now()
	d.tp.cancel()
	if err := <-d.tp.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	close(d.tp.done)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("stop after the drain took %s", took)
	}
	calls, released := d.f.snapshot()
	if len(calls) == 0 {
		t.Fatal("no Proxy call reached the server")
	}
	for i := range calls {
		if id := fmt.Sprintf("lease-%d", i+1); released[id] != 1 {
			t.Errorf("%s released %d times, want 1 (all: %v)", id, released[id], released)
		}
	}
}

// TestDrainTimeoutAndSecondSignal: a connection that does not finish holds the drain only up to
// drain_timeout; a drain whose context is cancelled (a second signal) returns at once; the stop
// then cuts the connection within 2 s.
func TestDrainTimeoutAndSecondSignal(t *testing.T) {
	d := newDrainSetup(t, 300*time.Millisecond)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoMsg(t, c, "idle")
	r := d.tp.Drain(context.Background())
	if r.TCPLeft != 1 || r.Took < 300*time.Millisecond || r.Took > 3*time.Second {
		t.Fatalf("drain with a connection left open: %+v, want TCPLeft=1 after ~300ms", r)
	}

	d2 := newDrainSetup(t, time.Hour)
	c2, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d2.port))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	echoMsg(t, c2, "idle")
	ctx, second := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, second)
	start := time.Now()
	r = d2.tp.Drain(ctx)
	if took := time.Since(start); took > 2*time.Second || r.TCPLeft != 1 {
		t.Fatalf("second signal: drain returned after %s with %+v", took, r)
	}
	start = time.Now()
	d2.tp.cancel()
	if err := <-d2.tp.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	close(d2.tp.done)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("stop took %s", took)
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after the stop")
	}
}

// unavailableIngress answers every ReleaseProxy with Unavailable, as a server going away does.
type unavailableIngress struct {
	pb.UnimplementedIngressServer
	calls atomic.Int64
}

func (u *unavailableIngress) ReleaseProxy(context.Context, *pb.ReleaseProxyRequest) (*pb.ReleaseProxyResponse, error) {
	u.calls.Add(1)
	return nil, status.Error(codes.Unavailable, "server stopping")
}

// TestReleaseAtStopNotRetried: releases that fail while the proxy stops are not retried: a
// release already retrying makes one last attempt, releases sent during the stop are tried once
// each, all at once, and Close returns in well under a second instead of retrying for seconds.
func TestReleaseAtStopNotRetried(t *testing.T) {
	u := &unavailableIngress{}
	conn := startIngress(t, u)
	var logs strings.Builder
	r := newGRPCResolver(conn, "proxy-test", testLogger(t, &logs))
	r.Release(Lease{LeaseID: "retrying"})
	waitFor(t, 10*time.Second, "first release attempt", func() bool { return u.calls.Load() >= 1 })

	r.beginClose()
	for i := range 200 {
		r.Release(Lease{LeaseID: fmt.Sprintf("at-stop-%d", i)})
	}
	start := time.Now()
	r.Close(stopReleaseGrace)
	took := time.Since(start)
	// Calls the client gave up on may still reach the server's handler afterwards: let them land,
	// then nothing more may come.
	time.Sleep(500 * time.Millisecond)
	calls := u.calls.Load()
	time.Sleep(500 * time.Millisecond)
	if after := u.calls.Load(); after != calls {
		t.Fatalf("%d release attempts more than 0.5 s after Close returned", after-calls)
	}
	// 200 single attempts plus at most two for the lease that was retrying.
	if calls > 203 {
		t.Fatalf("%d ReleaseProxy calls, want at most 203 (one each, no retry at stop)", calls)
	}
	if took > stopReleaseGrace+500*time.Millisecond {
		t.Fatalf("Close took %s, bound %s", took, stopReleaseGrace)
	}
	if n := strings.Count(logs.String(), "not released at stop"); n != 1 || strings.Contains(logs.String(), "could not release use") {
		t.Fatalf("want one summary line for the failed releases and none per lease, got:\n%s", logs.String())
	}
}

// lockedBuilder is a strings.Builder safe for the loggers of several goroutines.
type lockedBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// testLogger logs to the test and into b.
func testLogger(t *testing.T, b *strings.Builder) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Debug,
		Output: io.MultiWriter(testWriter{t}, &lockedBuilder{b: b})})
}
