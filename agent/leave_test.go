package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

// leaveTestAgent is the agent of the leave tests, running every role against a real Consul
// with a TCP entry point on listen relayed to a local echo server (a host service).
type leaveTestAgent struct {
	a      *Agent
	consul *api.Client
	listen int
	done   chan error
}

func startLeaveTestAgent(t *testing.T) *leaveTestAgent {
	t.Helper()
	srv := consultest.Start(t)
	echo, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	listen := freePort(t)
	cfgFile, _ := oneProcessFiles{Node: "leave-test", Consul: srv.HTTPAddr,
		Stack: fmt.Sprintf(`
stack "dev" {
  service "echo.dev" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = "30s"
  }
}
`, listen),
		ProxyExtra: `  drain_timeout = "60s"`,
		ClientExtra: fmt.Sprintf(`  # -dev turns it off; a leave removes everything whatever it says
  keep_tunnels_on_stop = true
  service "echo.dev" {
    stack          = "dev"
    port           = %d
    check_interval = "1s"
  }`, echo.Addr().(*net.TCPAddr).Port)}.write(t, t.TempDir())
	res := config.Load([]config.Source{{Path: cfgFile}}, true)
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	a, err := New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "leave", Level: hclog.Info, Output: testWriter{t}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { done <- a.Run(ctx); close(finished) }()
	t.Cleanup(func() { cancel(); <-finished })
	return &leaveTestAgent{a: a, consul: srv.Client(t), listen: listen, done: done}
}

// registered lists the agent's own and its host service's (echo.dev) registrations in Consul.
func (l *leaveTestAgent) registered(t *testing.T) []string {
	t.Helper()
	svcs, err := l.consul.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for id := range svcs {
		if id == "nullnet-leave-test" || id == "nullnet-host-leave-test-echo.dev" {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// TestAgentLeaveDrains runs every role in one agent against a real Consul (as `make dev`
// does), holds a TCP connection relayed by its proxy, and asks it to leave with
// PUT /v1/agent/leave: the proxy stops accepting, the live connection keeps relaying until its
// client closes it, then the agent stops by itself, within 2 s of that close,
// and removes its registrations from Consul.
func TestAgentLeaveDrains(t *testing.T) {
	l := startLeaveTestAgent(t)
	a, listen, done := l.a, l.listen, l.done
	waitFor(t, "the agent and its host service registered", 30*time.Second, func() bool { return len(l.registered(t)) == 2 })
	var c net.Conn
	roundTrip := func(c net.Conn, msg string) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	waitFor(t, "a relayed round trip through the proxy", 60*time.Second, func() bool {
		var err error
		if c, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", listen), time.Second); err != nil {
			return false
		}
		if roundTrip(c, "ping") != nil {
			c.Close()
			return false
		}
		return true
	})
	defer c.Close()

	req, _ := http.NewRequest(http.MethodPut, "http://"+a.HTTPAddr()+"/v1/agent/leave", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body["drain_timeout"] != "1m0s" {
		t.Fatalf("PUT /v1/agent/leave: %d %v", resp.StatusCode, body)
	}
	waitFor(t, "the proxy's listener closed by the drain", 10*time.Second, func() bool {
		nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", listen), time.Second)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
	time.Sleep(300 * time.Millisecond)
	if err := roundTrip(c, "still relayed while draining"); err != nil {
		t.Fatalf("live connection during the drain: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("agent stopped with a connection still open: %v", err)
	default:
	}
	c.Close()
	closed := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not stop after its last connection closed")
	}
	if took := time.Since(closed); took > 2*time.Second {
		t.Fatalf("agent stopped %s after the last connection closed, want < 2 s", took)
	}
	t.Logf("agent stopped %s after the last connection closed", time.Since(closed).Round(time.Millisecond))
	if r := l.registered(t); len(r) != 0 {
		t.Fatalf("still registered in Consul after a leave: %v", r)
	}
}

// TestAgentShutdownKeepsRegistrations: SIGTERM's path (Shutdown) with the default
// client.keep_tunnels_on_stop leaves the agent's own and its host services' registrations in
// Consul, so a restart ends no session (replica_gone); a leave after a restart removes them.
func TestAgentShutdownKeepsRegistrations(t *testing.T) {
	l := startLeaveTestAgent(t)
	waitFor(t, "the agent and its host service registered", 30*time.Second, func() bool {
		return len(l.registered(t)) == 2
	})
	if !l.a.keepsOnStop() {
		t.Fatal("the default configuration does not keep tunnels on stop")
	}
	l.a.Shutdown()
	select {
	case err := <-l.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop")
	}
	if r := l.registered(t); len(r) != 2 {
		t.Fatalf("registrations after SIGTERM's stop: %v, want the agent's and its host service's", r)
	}
}
