package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

// apiOnlyAgent runs an agent with no role: only its HTTP API, configured by body. It needs no
// Consul, so the API's limits are tested on their own, with real sockets.
func apiOnlyAgent(t *testing.T, body string, logOut io.Writer) *Agent {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.hcl")
	src := fmt.Sprintf("node_name = \"api-test\"\nports {\n  http = %d\n  grpc = %d\n}\n", freePort(t), freePort(t)) + body
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	res := config.Load([]config.Source{{Path: p}}, false)
	if res.Diags.HasErrors() {
		t.Fatalf("config: %s", config.FormatDiagnostics(res.Files, res.Diags))
	}
	if logOut == nil {
		logOut = testWriter{t}
	}
	a, err := New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "api", Level: hclog.Debug, Output: logOut}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// keepAliveGet sends one GET on a raw connection and reads the answer, leaving the connection
// open (HTTP/1.1 keep-alive), as the idle clients of the issue did.
func keepAliveGet(c net.Conn, path string) (int, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: api\r\n\r\n", path); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	return c
}

// TestHTTPAPIBindsLoopbackByDefault: without client_addr the API listens on 127.0.0.1, and a
// non-loopback client_addr without TLS is warned about at start.
func TestHTTPAPIBindsLoopbackByDefault(t *testing.T) {
	a := apiOnlyAgent(t, "", nil)
	if host, _, _ := net.SplitHostPort(a.HTTPAddr()); host != "127.0.0.1" {
		t.Fatalf("HTTP API bound to %s, want 127.0.0.1", a.HTTPAddr())
	}
	var logs syncBuffer
	b := apiOnlyAgent(t, "client_addr = \"0.0.0.0\"\n", &logs)
	if host, _, _ := net.SplitHostPort(b.HTTPAddr()); !net.ParseIP(host).IsUnspecified() {
		t.Fatalf("HTTP API bound to %s, want all addresses", b.HTTPAddr())
	}
	if !strings.Contains(logs.String(), "non-loopback address without TLS") {
		t.Fatalf("no warning about a non-loopback API without TLS; log:\n%s", logs.String())
	}
}

// TestHTTPAPIIdleConnectionsClosed: keep-alive connections that made one request and then
// hold still are closed after limits.http_idle_timeout, and their slots are given back.
func TestHTTPAPIIdleConnectionsClosed(t *testing.T) {
	a := apiOnlyAgent(t, "limits {\n  http_idle_timeout = \"1s\"\n}\n", nil)
	const n = 150
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dialFrom(t, "127.0.0.1", a.HTTPAddr())
		defer conns[i].Close()
		if code, err := keepAliveGet(conns[i], "/v1/agent/self"); err != nil || code != 200 {
			t.Fatalf("conn %d: GET: %d %v", i, code, err)
		}
	}
	lim := a.httpLn.(*limitListener)
	if total, _ := lim.Counts(netip.MustParseAddr("127.0.0.1")); total != n {
		t.Fatalf("%d connections counted, want %d", total, n)
	}
	start := time.Now()
	var wg sync.WaitGroup
	closed := make([]time.Duration, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := c.Read(make([]byte, 1))
			if err == io.EOF {
				closed[i] = time.Since(start)
			}
		}()
	}
	wg.Wait()
	var worst time.Duration
	for i, d := range closed {
		if d == 0 {
			t.Fatalf("conn %d was not closed by the server within 10 s", i)
		}
		worst = max(worst, d)
	}
	if worst > 4*time.Second {
		t.Fatalf("idle connections closed after up to %v, want about 1 s", worst)
	}
	t.Logf("%d idle connections closed by the server within %v", n, worst.Round(time.Millisecond))
	deadline := time.Now().Add(2 * time.Second)
	for {
		total, _ := lim.Counts(netip.Addr{})
		if total == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connection slots still held after the idle close", total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHTTPAPIConnLimitPerClient: with the default limit, connection 201 from one address is
// refused with 429 while another address (127.0.0.2: loopback is a /8) is still served; a
// slot given back is usable again.
func TestHTTPAPIConnLimitPerClient(t *testing.T) {
	a := apiOnlyAgent(t, "", nil)
	if got := a.Config().Limits.HTTPMaxConnsPerClient; got != 200 {
		t.Fatalf("default http_max_conns_per_client = %d, want 200", got)
	}
	conns := make([]net.Conn, 200)
	for i := range conns {
		conns[i] = dialFrom(t, "127.0.0.1", a.HTTPAddr())
		defer conns[i].Close()
		if code, err := keepAliveGet(conns[i], "/v1/agent/self"); err != nil || code != 200 {
			t.Fatalf("conn %d: GET: %d %v", i, code, err)
		}
	}
	extra := dialFrom(t, "127.0.0.1", a.HTTPAddr())
	defer extra.Close()
	if code, err := keepAliveGet(extra, "/v1/agent/self"); err == nil && code != 429 {
		t.Fatalf("connection 201 from 127.0.0.1: %d, want 429", code)
	} else {
		t.Logf("connection 201 from 127.0.0.1: status %d, err %v", code, err)
	}
	other := dialFrom(t, "127.0.0.2", a.HTTPAddr())
	defer other.Close()
	if code, err := keepAliveGet(other, "/v1/agent/self"); err != nil || code != 200 {
		t.Fatalf("a connection from 127.0.0.2 while 127.0.0.1 is at its limit: %d %v", code, err)
	}
	conns[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialFrom(t, "127.0.0.1", a.HTTPAddr())
		code, err := keepAliveGet(c, "/v1/agent/self")
		c.Close()
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the freed slot was not reusable: %d %v", code, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHTTPAPIConnLimitTotal: limits.http_max_conns caps all clients together with 503.
func TestHTTPAPIConnLimitTotal(t *testing.T) {
	a := apiOnlyAgent(t, "limits {\n  http_max_conns = 10\n}\n", nil)
	for i := 0; i < 10; i++ {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 1+i%2), a.HTTPAddr())
		defer c.Close()
		if code, err := keepAliveGet(c, "/v1/agent/self"); err != nil || code != 200 {
			t.Fatalf("conn %d: %d %v", i, code, err)
		}
	}
	c := dialFrom(t, "127.0.0.3", a.HTTPAddr())
	defer c.Close()
	if code, err := keepAliveGet(c, "/v1/agent/self"); err != nil || code != 503 {
		t.Fatalf("connection 11: %d %v, want 503", code, err)
	}
}

// TestHTTPAPIBlockingQueryOutlivesWriteTimeout: a blocking query waits longer than
// limits.http_write_timeout and still gets its answer, as blocking queries of up to 10 min must:
// over HTTP/1.1 and over HTTPS with HTTP/2 (as curl speaks it), whose streams have their own
// write deadlines.
func TestHTTPAPIBlockingQueryOutlivesWriteTimeout(t *testing.T) {
	srv := consultest.Start(t)
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			body := "limits {\n  http_write_timeout = \"1s\"\n}\n"
			client, scheme := http.DefaultClient, "http"
			var p *testPKI
			if withTLS {
				p = newTestPKI(t)
				cert, key := p.issue(t, "server", "agent-test")
				body += p.tlsBlock(cert, key)
				client, scheme = p.client(t, cert, key), "https"
				client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
			}
			cfg := testConfig(t, srv.HTTPAddr, body)
			a, err := New(cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: testWriter{t}}))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = a.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			blockingQueryOutlives(t, client, scheme+"://"+a.HTTPAddr()+"/v1/events", withTLS)
		})
	}
}

func blockingQueryOutlives(t *testing.T, client *http.Client, base string, wantH2 bool) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		resp, err := client.Get(base)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if wantH2 && resp.ProtoMajor != 2 {
			t.Fatalf("HTTPS answered with %s, want HTTP/2", resp.Proto)
		}
		idx := max(resp.Header.Get("X-Nullnet-Index"), "1")
		start := time.Now()
		resp, err = client.Get(base + "?wait=3s&index=" + idx)
		if err != nil {
			t.Fatalf("blocking query after %v: %v", time.Since(start), err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("blocking query after %v: %d %v", took, resp.StatusCode, err)
		}
		if took > 2*time.Second {
			t.Logf("blocking query answered after %v with http_write_timeout = 1s (%s)", took.Round(time.Millisecond), resp.Proto)
			return
		}
		// An event arrived during the wait (the agent is starting): block again.
	}
	t.Fatal("every blocking query was woken early by events; nothing was tested")
}

// syncBuffer is a log sink tests read while the agent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
