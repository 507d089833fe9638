package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	nnserver "github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// serverEnv is a real nullnet server (network = "direct") on a real Consul dev agent, with its
// gRPC API on a loopback socket and a stacks directory the test rewrites.
type serverEnv struct {
	t        *testing.T
	consul   *api.Client
	stackDir string
	conn     *grpc.ClientConn
	http     *httptest.Server
	grpcAddr string
	events   *events.Store

	srv *nnserver.Server
	rev int
	mu  sync.Mutex
	g   *grpc.Server
}

// stopGRPC stops the server's gRPC API: every stream and call breaks.
func (e *serverEnv) stopGRPC() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.g.Stop()
}

// startGRPC serves the server's gRPC API (again) on its address.
func (e *serverEnv) startGRPC() {
	e.t.Helper()
	lis, err := net.Listen("tcp", e.grpcAddr)
	if err != nil {
		e.t.Fatalf("re-listening on %s: %v", e.grpcAddr, err)
	}
	g := grpc.NewServer()
	e.srv.RegisterGRPC(g)
	go func() { _ = g.Serve(lis) }()
	e.mu.Lock()
	e.g = g
	e.mu.Unlock()
}

func startServer(t *testing.T) *serverEnv {
	t.Helper()
	c := consultest.Start(t)
	e := &serverEnv{t: t, consul: c.Client(t), stackDir: t.TempDir()}
	if err := os.WriteFile(filepath.Join(e.stackDir, "app.hcl"), []byte("stack \"nnpx\" {\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName = "nnpx-server"
	cfg.Server.Enabled = true
	cfg.Server.StacksDir = e.stackDir
	cfg.Server.Network = config.NetworkDirect
	logger := hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.Info, Output: testWriter{t}})
	e.events = events.New(10000, logger)
	srv, err := nnserver.New(nnserver.Config{Agent: cfg, Consul: e.consul, Events: e.events, Logger: logger,
		LockKey: "nullnet/nnpx-leader"})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.grpcAddr = lis.Addr().String()
	e.srv = srv
	lis.Close()
	e.startGRPC()
	mux := http.NewServeMux()
	srv.RegisterHTTP(mux)
	e.http = httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	conn, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.conn = conn
	t.Cleanup(func() {
		e.http.Close()
		e.stopGRPC()
		cancel()
		<-done
		_ = conn.Close()
	})
	// Edit the stacks only once the server has read them the first time.
	waitFor(t, 60*time.Second, "the server's first stack load", func() bool {
		evs, _ := e.events.Since(0)
		for _, ev := range evs {
			if ev.Kind == events.ConfigReloaded {
				return true
			}
		}
		return false
	})
	return e
}

// writeStack replaces the stack file and waits until the server reloaded it.
func (e *serverEnv) writeStack(services string) {
	e.t.Helper()
	{
		e.rev++
		after := e.events.Index()
		body := fmt.Sprintf("# rev %d\nstack \"nnpx\" {\n%s}\n", e.rev, services)
		tmp := filepath.Join(e.stackDir, ".app.hcl.tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			e.t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(e.stackDir, "app.hcl")); err != nil {
			e.t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			evs, _ := e.events.Since(after)
			for _, ev := range evs {
				if ev.Kind == events.ConfigReloaded || ev.Kind == events.ConfigReloadRejected {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.t.Fatalf("the server did not reload the stacks directory within 10 s of stack write %d", e.rev)
	}
}

// replica registers a healthy instance of service at addr:port, served by nullnet node "node-a".
func (e *serverEnv) replica(id, service string, port int) {
	e.t.Helper()
	err := e.consul.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: service, Address: "127.0.0.1",
		Port: port, Meta: map[string]string{nnserver.MetaNode: "node-a"},
		Check: &api.AgentServiceCheck{CheckID: "nnpx-" + id, TTL: "1h", Status: api.HealthPassing}})
	if err != nil {
		e.t.Fatalf("registering replica %s: %v", id, err)
	}
}

// uses returns the open uses per service of the proxy node's sessions on the server.
func (e *serverEnv) uses() map[string]int {
	e.t.Helper()
	resp, err := http.Get(e.http.URL + "/v1/sessions")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []struct {
		Key struct {
			Service string `json:"service"`
		} `json:"key"`
		Service string `json:"service"`
		Uses    int    `json:"uses"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &out); err != nil {
		e.t.Fatalf("sessions: %v: %s", err, body)
	}
	m := map[string]int{}
	for _, s := range out {
		name := s.Service
		if name == "" {
			name = s.Key.Service
		}
		m[name] += s.Uses
	}
	return m
}

// slowResolver delays resolution for some client addresses in front of the real resolver.
type slowResolver struct {
	Resolver
	slow netip.Addr
	d    time.Duration
}

func (s slowResolver) Resolve(ctx context.Context, client netip.Addr, service string, p Protocol) (Lease, error) {
	if client == s.slow {
		select {
		case <-time.After(s.d):
		case <-ctx.Done():
			return Lease{}, ctx.Err()
		}
	}
	return s.Resolver.Resolve(ctx, client, service, p)
}

// TestWithServer runs the acceptance list against a real server and Consul: listeners
// follow stack edits, TCP/UDP relays and the HTTP router resolve through the Proxy RPC and
// release every use.
func TestWithServer(t *testing.T) {
	e := startServer(t)

	// Upstreams.
	sink := tcpUpstream(t, hashReply)
	echoLn := tcpUpstream(t, echo)
	udpUp := udpUpstream(t, "127.0.0.1:0", udpEcho)
	tickUp := udpUpstream(t, "127.0.0.1:0", func(b []byte, send func([]byte)) { send(b) })
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web host=%s xff=%s", r.Host, r.Header.Get("X-Forwarded-For"))
	}))
	defer web.Close()
	deadWeb, _ := net.Listen("tcp", "127.0.0.1:0")
	deadWebPort := deadWeb.Addr().(*net.TCPAddr).Port
	deadWeb.Close()

	pSink, pEcho, pUDP, pIdle, pAdded, pHeld := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	base := fmt.Sprintf(`
  service "sink" {
    protocol = "tcp"
    listen_port = %d
    timeout = 0
  }
  service "echo" {
    protocol = "tcp"
    listen_port = %d
    timeout = 0
  }
  service "uecho" {
    protocol = "udp"
    listen_port = %d
    timeout = 0
  }
  service "utick" {
    protocol = "udp"
    listen_port = %d
    timeout = "1s"
  }
  service "web" {
    timeout = "30s"
  }
  service "down" {
    timeout = "30s"
  }
  service "broken" {
    timeout = "30s"
  }
`, pSink, pEcho, pUDP, pIdle)
	e.writeStack(base)
	e.replica("sink-1", "sink", sink.Addr().(*net.TCPAddr).Port)
	e.replica("echo-1", "echo", echoLn.Addr().(*net.TCPAddr).Port)
	e.replica("uecho-1", "uecho", udpUp.LocalAddr().(*net.UDPAddr).Port)
	e.replica("utick-1", "utick", tickUp.LocalAddr().(*net.UDPAddr).Port)
	e.replica("web-1", "web", web.Listener.Addr().(*net.TCPAddr).Port)
	e.replica("broken-1", "broken", deadWebPort)

	logger := hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Info, Output: testWriter{t}})
	res := slowResolver{Resolver: newGRPCResolver(e.conn, "nnpx-proxy", logger.Named("resolver")),
		slow: netip.MustParseAddr("127.0.0.2"), d: 3 * time.Second}
	tp := startProxy(t, res, func(a *config.Config, c *Config) {
		a.NodeName = "nnpx-proxy"
		c.Conn = e.conn
		c.DisableHTTP = false
		c.Logger = logger
	})
	for _, p := range []uint16{pSink, pEcho} {
		tp.waitListening(t, TCP, p)
	}
	for _, p := range []uint16{pUDP, pIdle} {
		tp.waitListening(t, UDP, p)
	}
	if st := tp.status(); st.Stream != "connected" || st.TableVersion == 0 {
		t.Fatalf("status %+v", st)
	}

	t.Run("tcp 1 GiB byte-exact with half-close", func(t *testing.T) {
		const size = 1 << 30
		c := dialProxy(t, pSink)
		defer c.Close()
		want := sha256.New()
		n, err := io.Copy(c, io.TeeReader(io.LimitReader(newRandReader(42), size), want))
		if err != nil || n != size {
			t.Fatalf("sent %d: %v", n, err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, want.Sum(nil)) {
			t.Fatalf("digest after half-close: %x (%v), want %x", got, err, want.Sum(nil))
		}
	})

	t.Run("tcp 500 concurrent connections", func(t *testing.T) {
		const n = 500
		conns := make([]*net.TCPConn, n)
		for i := range conns {
			conns[i] = dialProxy(t, pEcho)
		}
		var wg, echoed sync.WaitGroup
		hold := make(chan struct{})
		errs := make(chan error, n)
		for i, c := range conns {
			wg.Add(1)
			echoed.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				done := sync.OnceFunc(echoed.Done)
				defer done()
				msg := []byte(fmt.Sprintf("connection %d\n", i))
				_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("conn %d: %q %v", i, got, err)
					return
				}
				done()
				<-hold
			}()
		}
		echoed.Wait()
		if l, _ := tp.listener(TCP, pEcho); l.Active != n {
			t.Errorf("%d connections relayed at once, want %d", l.Active, n)
		}
		waitFor(t, 30*time.Second, "500 uses open on the server", func() bool { return e.uses()["echo"] == n })
		close(hold)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("udp 200 client addresses", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			c := udpClient(t, "", pUDP)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := exchange(c, []byte(fmt.Sprintf("dgram %d", i)), 5); err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if l, _ := tp.listener(UDP, pUDP); l.Active < 200 {
			t.Errorf("%d sessions, want 200", l.Active)
		}
	})

	t.Run("udp slow resolution does not delay another client", func(t *testing.T) {
		slow := udpClient(t, "127.0.0.2:0", pUDP)
		if _, err := slow.Write([]byte("slow")); err != nil {
			t.Fatal(err)
		}
		fast := udpClient(t, "127.0.0.1:0", pUDP)
		if err := exchange(fast, []byte("fast"), 3); err != nil {
			t.Fatal(err)
		}
		// The slow client has no answer yet: its resolution is still waiting.
		_ = slow.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := slow.Read(make([]byte, 10)); err == nil {
			t.Fatal("slow client answered before its resolution finished; the test proves nothing")
		}
		_ = slow.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 10)
		n, err := slow.Read(buf)
		if err != nil || string(buf[:n]) != "slow" {
			t.Fatalf("slow client: %q %v", buf[:n], err)
		}
	})

	t.Run("udp idle session swept and released", func(t *testing.T) {
		c := udpClient(t, "", pIdle)
		if err := exchange(c, []byte("hello"), 3); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "use open on the server", func() bool { return e.uses()["utick"] == 1 })
		waitFor(t, 30*time.Second, "idle session swept and released", func() bool {
			l, _ := tp.listener(UDP, pIdle)
			return l.Active == 0 && e.uses()["utick"] == 0
		})
	})

	t.Run("http routing by Host", func(t *testing.T) {
		addr := tp.http.Addr()
		get := func(host string) (int, string) {
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", host, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := get("web:8080"); code != 200 || body != "web host=web:8080 xff=127.0.0.1" {
			t.Errorf("web: %d %q", code, body)
		}
		for host, want := range map[string]int{"nosuch": 404, "down": 503, "broken": 502} {
			if code, body := get(host); code != want {
				t.Errorf("%s: %d, want %d (%q)", host, code, want, body)
			}
		}
	})

	t.Run("add and remove a stack service without restart", func(t *testing.T) {
		e.replica("added-1", "added", echoLn.Addr().(*net.TCPAddr).Port)
		e.writeStack(base + fmt.Sprintf(`
  service "added" {
    protocol = "tcp"
    listen_port = %d
    timeout = 0
  }
`, pAdded))
		tp.waitListening(t, TCP, pAdded)
		c := relayedConn(t, pAdded)

		e.writeStack(base)
		waitFor(t, 30*time.Second, "listener of the removed service closed", func() bool {
			_, ok := tp.listener(TCP, pAdded)
			return !ok && !dialable(pAdded)
		})
		c.Close()
	})

	t.Run("port held by another process is reported and taken once freed", func(t *testing.T) {
		holder, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", pHeld))
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()
		e.replica("held-1", "held", echoLn.Addr().(*net.TCPAddr).Port)
		e.writeStack(base + fmt.Sprintf(`
  service "held" {
    protocol = "tcp"
    listen_port = %d
    timeout = 0
  }
`, pHeld))
		waitFor(t, 30*time.Second, "bind failure reported", func() bool {
			l, ok := tp.listener(TCP, pHeld)
			return ok && l.State == "bind_failed" && strings.Contains(l.Error, "address already in use") &&
				tp.hasEvent(events.TCPListenerBindFailed)
		})
		holder.Close()
		tp.waitListening(t, TCP, pHeld)
		relayedConn(t, pHeld).Close()
	})

	t.Run("losing the stream keeps listeners and connections", func(t *testing.T) {
		c := dialProxy(t, pEcho)
		defer c.Close()
		roundTripTCP(t, c, "before")
		before := tp.status().TableVersion
		e.stopGRPC()
		waitFor(t, 30*time.Second, "stream reported lost", func() bool { return tp.status().Stream == "disconnected" })
		roundTripTCP(t, c, "during the outage") // the relay does not depend on the server
		if l, ok := tp.listener(TCP, pEcho); !ok || l.State != "listening" {
			t.Fatalf("listener after the stream was lost: %+v", l)
		}
		// The listener still accepts; the proxy may reset the connection at once because it cannot
		// resolve without a server, and a fast reset can surface in connect itself. Only a
		// refusal would mean the listener is gone.
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", pEcho), 10*time.Second); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("new connection during the outage refused: %v", err)
			}
		} else {
			c.Close()
		}
		e.startGRPC()
		waitFor(t, 60*time.Second, "stream back", func() bool {
			st := tp.status()
			return st.Stream == "connected" && st.TableVersion >= before
		})
		c2 := dialProxy(t, pEcho)
		defer c2.Close()
		roundTripTCP(t, c2, "after reconnecting")
	})

	// Every use the relays took has been given back, except the UDP sessions still open.
	for _, tcp := range []string{"sink", "echo", "web", "broken", "added", "held"} {
		waitFor(t, 30*time.Second, "uses of "+tcp+" released", func() bool { return e.uses()[tcp] == 0 })
	}
}

func roundTripTCP(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("round trip: %q %v", got, err)
	}
}

// relayedConn returns a connection through port that has relayed a round trip, retrying while
// the server has not seen the service's replica yet (the proxy resets the connection then).
func relayedConn(t *testing.T, port uint16) net.Conn {
	t.Helper()
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
		if err != nil { // reset before connect returned: the proxy refused it at once
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := []byte("round trip")
		got := make([]byte, len(msg))
		_, err = c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, got)
		}
		if err == nil && bytes.Equal(got, msg) {
			_ = c.SetDeadline(time.Time{})
			return c
		}
		c.Close()
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no round trip through port %d within 30s: %v", port, last)
	return nil
}

func dialable(port uint16) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
