package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testConfig loads a real configuration file, as an operator would write it.
func testConfig(t *testing.T, consulAddr, body string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	stacks := filepath.Join(dir, "stacks")
	if err := os.Mkdir(stacks, 0o755); err != nil {
		t.Fatal(err)
	}
	hcl := fmt.Sprintf(`
node_name      = "agent-test"
bind_addr      = "127.0.0.1"
advertise_addr = "127.0.0.1"
ports {
  http = %d
  grpc = %d
}
consul {
  address = %q
}
server {
  enabled    = true
  stacks_dir = %q
  network    = "direct"
}
telemetry {
  prometheus_retention_time = "1m"
}
`, freePort(t), freePort(t), consulAddr, stacks) + body
	p := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(p, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	res := config.Load([]config.Source{{Path: p}}, false)
	if res.Diags.HasErrors() {
		t.Fatalf("config: %s", config.FormatDiagnostics(res.Files, res.Diags))
	}
	return res.Config
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAgentLifecycle starts a server agent against a real Consul, checks the HTTP API and its
// registration in Consul, then stops it and checks it is gone within 2 s.
func TestAgentLifecycle(t *testing.T) {
	srv := consultest.Start(t)
	cfg := testConfig(t, srv.HTTPAddr, "")
	a, err := New(cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: testWriter{t}}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	base := "http://" + a.HTTPAddr()
	code, body := get(t, base+"/v1/agent/self")
	if code != 200 {
		t.Fatalf("/v1/agent/self: %d %s", code, body)
	}
	var self struct {
		Config  config.Config `json:"config"`
		Roles   []string      `json:"roles"`
		Version string        `json:"version"`
	}
	if err := json.Unmarshal([]byte(body), &self); err != nil {
		t.Fatalf("decode self: %v\n%s", err, body)
	}
	if self.Config.NodeName != "agent-test" || strings.Join(self.Roles, ",") != "server" || self.Version == "" {
		t.Fatalf("unexpected self: node=%q roles=%v version=%q", self.Config.NodeName, self.Roles, self.Version)
	}
	if strings.Contains(body, "secret-token") {
		t.Fatalf("the Consul token must never be shown")
	}

	if code, body := get(t, base+"/v1/agent/metrics"); code != 200 || !strings.Contains(body, "Gauges") {
		t.Fatalf("/v1/agent/metrics: %d %s", code, body)
	}
	if code, body := get(t, base+"/v1/agent/metrics?format=prometheus"); code != 200 || !strings.Contains(body, "# TYPE") {
		t.Fatalf("/v1/agent/metrics?format=prometheus: %d %.300s", code, body)
	}
	if code, _ := get(t, base+"/v1/nope"); code != 404 {
		t.Fatalf("unknown route: %d", code)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ must be off unless enable_debug: %d", code)
	}

	// The agent registers itself as service "nullnet" tagged with its roles.
	c := srv.Client(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		svcs, _, err := c.Catalog().Service("nullnet", "server", nil)
		if err == nil && len(svcs) == 1 && svcs[0].ServiceMeta[MetaNode] == "agent-test" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not registered in Consul: %v %v", svcs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("agent did not stop within 2 s")
	}
	done <- nil // for the deferred receive
	t.Logf("stopped in %s", time.Since(start))
	if _, err := net.DialTimeout("tcp", a.HTTPAddr(), 200*time.Millisecond); err == nil {
		t.Fatalf("HTTP listener still open after stop")
	}
	svcs, _, _ := c.Catalog().Service("nullnet", "", nil)
	if len(svcs) != 0 {
		t.Fatalf("agent still registered after stop: %v", svcs)
	}
}

// TestAgentPortInUse: a clash on the HTTP port is reported at start with the address.
func TestAgentPortInUse(t *testing.T) {
	srv := consultest.Start(t)
	cfg := testConfig(t, srv.HTTPAddr, "")
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.Ports.HTTP))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = New(cfg, hclog.NewNullLogger())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(cfg.Ports.HTTP)) {
		t.Fatalf("want an error naming port %d, got %v", cfg.Ports.HTTP, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestAgentEnableDebug: enable_debug serves Go's profiler on the HTTP API.
func TestAgentEnableDebug(t *testing.T) {
	srv := consultest.Start(t)
	cfg := testConfig(t, srv.HTTPAddr, "enable_debug = true\n")
	a, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1"} {
		if code, body := get(t, "http://"+a.HTTPAddr()+path); code != 200 || len(body) == 0 {
			t.Fatalf("GET %s: %d", path, code)
		}
	}
}
