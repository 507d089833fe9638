// Package consului checks what operators see in the Consul UI: the stack definitions nullnet
// mirrors and the host services its agents register, with their nullnet meta and health, in a
// real headless browser.
package consului

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent"
	"github.com/nullnet/nullnet/agent/client"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// artifactDir is where screenshots go: $NULLNET_TEST_ARTIFACTS, else bin/test-artifacts.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("NULLNET_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

func TestConsulUIShowsNullnetServices(t *testing.T) {
	srv := consultest.Start(t)

	// A host service that is listening, so its Consul check passes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	svcPort := ln.Addr().(*net.TCPAddr).Port

	dir := t.TempDir()
	stacks := filepath.Join(dir, "stacks")
	os.Mkdir(stacks, 0o755)
	os.WriteFile(filepath.Join(stacks, "ui.hcl"), []byte(`
stack "ui-demo" {
  service "redis.ui" {
    protocol    = "tcp"
    listen_port = 16380
    timeout     = "45s"
  }
}
`), 0o644)
	grpcPort := freePort(t)
	cfgFile := filepath.Join(dir, "agent.hcl")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
node_name      = "ui-node"
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
client {
  enabled = true
  servers = ["127.0.0.1:%d"]
  service "redis.ui" {
    stack = "ui-demo"
    port  = %d
  }
}
`, freePort(t), grpcPort, srv.HTTPAddr, stacks, grpcPort, svcPort)), 0o644)
	res := config.Load([]config.Source{{Path: cfgFile}}, false)
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	a, err := agent.New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "ui", Level: hclog.Warn}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	wd := startWebDriver(t)
	out := artifactDir(t)
	ui := "http://" + srv.HTTPAddr + "/ui/dc1/services/redis.ui/instances"
	const metaTab = "//a[contains(normalize-space(.), 'Tags & Meta')]"
	pages := []struct {
		name, url, tab string
		want           []string
	}{
		{"definition-metadata", ui + "/nullnet-stacks/nullnet-def-ui-demo-redis.ui/health-checks", metaTab,
			[]string{"nullnet-stack", "ui-demo", "nullnet-protocol", "tcp", "nullnet-listen-port", "16380", "nullnet-timeout", "45", "nullnet-definition"}},
		{"host-service-metadata", ui + "/consultest/" + client.ServiceID("ui-node", "redis.ui") + "/health-checks", metaTab,
			[]string{"nullnet-stack", "ui-demo", "nullnet-node", "ui-node"}},
		{"host-service-checks", ui + "/consultest/" + client.ServiceID("ui-node", "redis.ui") + "/health-checks", "",
			[]string{client.ServiceID("ui-node", "redis.ui") + ":port", "Success"}},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			var text string
			deadline := time.Now().Add(45 * time.Second)
			for {
				if err := wd.open(p.url); err != nil {
					t.Fatalf("open %s: %v", p.url, err)
				}
				time.Sleep(1500 * time.Millisecond) // the UI renders after its first API answers
				if p.tab != "" {
					if err := wd.click(p.tab); err == nil {
						time.Sleep(500 * time.Millisecond)
					}
				}
				text, _ = wd.text()
				if missing := missingAll(text, p.want); len(missing) == 0 {
					break
				} else if time.Now().After(deadline) {
					shot := filepath.Join(out, "consul-ui-"+p.name+"-FAILED.png")
					_ = wd.screenshot(shot)
					t.Fatalf("the Consul UI page %s lacks %v (screenshot %s); it shows:\n%s", p.url, missing, shot, text)
				}
			}
			shot := filepath.Join(out, "consul-ui-"+p.name+".png")
			if err := wd.screenshot(shot); err != nil {
				t.Fatalf("screenshot: %v", err)
			}
			t.Logf("screenshot: %s", shot)
		})
	}
}

func missingAll(text string, want []string) []string {
	var missing []string
	for _, w := range want {
		if !strings.Contains(text, w) {
			missing = append(missing, w)
		}
	}
	return missing
}
