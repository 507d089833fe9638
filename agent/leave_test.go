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
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

// TestAgentLeaveDrains runs every role in one agent against a real Consul (as `make dev`
// does), holds a TCP connection relayed by its proxy, and asks it to leave with
// PUT /v1/agent/leave: the proxy stops accepting, the live connection keeps relaying until its
// client closes it, then the agent stops by itself, within 2 s of that close.
func TestAgentLeaveDrains(t *testing.T) {
	srv := consultest.Start(t)
	echo, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	dir := t.TempDir()
	stacks := filepath.Join(dir, "stacks")
	if err := os.Mkdir(stacks, 0o755); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	if err := os.WriteFile(filepath.Join(stacks, "dev.hcl"), []byte(fmt.Sprintf(`
stack "dev" {
  service "echo.dev" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = "30s"
  }
}
`, listen)), 0o644); err != nil {
		t.Fatal(err)
	}
	grpcPort := freePort(t)
	cfgFile := filepath.Join(dir, "dev.hcl")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
node_name = "leave-test"
ports {
  http = %d
  grpc = %d
}
consul {
  address = %q
}
server {
  stacks_dir = %q
}
proxy {
  http_addr     = "127.0.0.1:%d"
  servers       = ["127.0.0.1:%d"]
  drain_timeout = "60s"
}
client {
  servers = ["127.0.0.1:%d"]
  service "echo.dev" {
    stack          = "dev"
    port           = %d
    check_interval = "1s"
  }
}
`, freePort(t), grpcPort, srv.HTTPAddr, stacks, freePort(t), grpcPort, grpcPort, echo.Addr().(*net.TCPAddr).Port)), 0o644); err != nil {
		t.Fatal(err)
	}
	res := config.Load([]config.Source{{Path: cfgFile}}, true)
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	a, err := New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "leave", Level: hclog.Info, Output: testWriter{t}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

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
}
