package command

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
)

const cliStack = `stack "my-app" {
  service "redis.internal" {
    protocol    = "tcp"
    listen_port = 6379
    timeout     = 0
  }
  service "dns.internal" {
    protocol    = "udp"
    listen_port = 53
    timeout     = "30s"
  }
  service "fs.color.com" {}
}
`

func TestValidateStacks(t *testing.T) {
	good := t.TempDir()
	os.WriteFile(filepath.Join(good, "app.hcl"), []byte(cliStack), 0o644)
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "a.hcl"), []byte(cliStack), 0o644)
	os.WriteFile(filepath.Join(bad, "b.hcl"), []byte("stack \"b\" {\n  service \"redis.b\" {\n    protocol = \"tcp\"\n    listen_port = 6379\n    timeout = 1\n  }\n}\n"), 0o644)
	// An agent config whose HTTP API uses 6379: the same stack is then invalid.
	agentCfg := filepath.Join(t.TempDir(), "agent.hcl")
	os.WriteFile(agentCfg, []byte("ports {\n  http = 6379\n}\n"), 0o644)

	cases := []struct {
		name     string
		args     []string
		code     int
		contains []string
	}{
		{"valid stacks", []string{"-stacks", good}, 0, []string{"1 stack file(s)", "1 stack(s), 3 service(s)", "valid"}},
		{"conflict across files", []string{"-stacks", bad}, 1, []string{
			filepath.Join(bad, "b.hcl") + ":2:3: error: Conflicting listen_port", `"redis.internal" (stack "my-app")`,
			filepath.Join(bad, "a.hcl") + ":2:3", "1 error(s)"}},
		{"reserved by the agent config", []string{"-stacks", good, agentCfg}, 1, []string{
			"Reserved listen_port", "the agent's HTTP API (ports.http)"}},
		{"missing dir", []string{"-stacks", filepath.Join(good, "absent")}, 1, []string{"Cannot read stacks directory"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ui := cli.NewMockUi()
			code := (&ValidateCommand{UI: ui}).Run(tc.args)
			out := ui.OutputWriter.String() + ui.ErrorWriter.String()
			if code != tc.code {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.contains {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// startStacksServer runs a server role against a real Consul and returns its HTTP API address.
func startStacksServer(t *testing.T) string {
	t.Helper()
	c := consultest.Start(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "app.hcl"), []byte(cliStack), 0o644)
	cfg := config.Default()
	cfg.Server.Enabled, cfg.Server.StacksDir = true, dir
	srv, err := server.New(server.Config{Agent: cfg, Consul: c.Client(t), Events: events.New(100, nil), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.RegisterHTTP(mux)
	h := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { h.Close(); cancel(); <-done })
	// Wait until the mirror's writes came back from Consul.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(h.URL + "/v1/port-mappings")
		if err == nil {
			var m []map[string]any
			ok := resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&m) == nil && len(m) == 2
			resp.Body.Close()
			if ok {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("server never published the table")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.TrimPrefix(h.URL, "http://")
}

func TestStacksAndPortMappingsCommands(t *testing.T) {
	addr := startStacksServer(t)
	t.Run("port-mappings table via -http-addr", func(t *testing.T) {
		ui := cli.NewMockUi()
		code := (&PortMappingsCommand{UI: ui}).Run([]string{"-http-addr", addr})
		out := ui.OutputWriter.String()
		if code != 0 || !strings.Contains(out, "PROTOCOL") ||
			!strings.Contains(out, "tcp       6379         redis.internal  my-app  never") ||
			!strings.Contains(out, "udp       53           dns.internal    my-app  30s") {
			t.Errorf("exit %d output:\n%s%s", code, out, ui.ErrorWriter.String())
		}
	})
	t.Run("port-mappings -json via NULLNET_HTTP_ADDR", func(t *testing.T) {
		t.Setenv("NULLNET_HTTP_ADDR", "http://"+addr)
		ui := cli.NewMockUi()
		if code := (&PortMappingsCommand{UI: ui}).Run([]string{"-json"}); code != 0 {
			t.Fatalf("exit %d: %s", code, ui.ErrorWriter.String())
		}
		var got []map[string]any
		if err := json.Unmarshal([]byte(ui.OutputWriter.String()), &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"stack": "my-app", "service": "redis.internal", "protocol": "tcp",
			"listen_port": float64(6379), "idle_timeout_secs": float64(0)}
		if len(got) != 2 || len(got[0]) != len(want) {
			t.Fatalf("got %v", got)
		}
		for k, v := range want {
			if got[0][k] != v {
				t.Errorf("%s = %v, want %v", k, got[0][k], v)
			}
		}
	})
	t.Run("stacks table", func(t *testing.T) {
		ui := cli.NewMockUi()
		code := (&StacksCommand{UI: ui}).Run([]string{"-http-addr", addr})
		out := ui.OutputWriter.String()
		if code != 0 || !strings.Contains(out, "fs.color.com") || !strings.Contains(out, "backend only") {
			t.Errorf("exit %d output:\n%s%s", code, out, ui.ErrorWriter.String())
		}
	})
	t.Run("unreachable agent", func(t *testing.T) {
		ui := cli.NewMockUi()
		code := (&StacksCommand{UI: ui}).Run([]string{"-http-addr", "127.0.0.1:1"})
		if code != 1 || !strings.Contains(ui.ErrorWriter.String(), "cannot reach the nullnet agent") {
			t.Errorf("exit %d: %s", code, ui.ErrorWriter.String())
		}
	})
	t.Run("bad address", func(t *testing.T) {
		ui := cli.NewMockUi()
		if code := (&PortMappingsCommand{UI: ui}).Run([]string{"-http-addr", "ftp://x"}); code != 2 {
			t.Errorf("exit %d", code)
		}
	})
}
