package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

// TestDevAgentRelays runs what `make dev` runs — every role in one process, network =
// "direct", on 127.0.0.1 — against a real Consul, and sends TCP through the proxy to a host
// service declared in the same agent: the control channel, the port table, the Proxy call and
// the relay all work together.
func TestDevAgentRelays(t *testing.T) {
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
	os.Mkdir(stacks, 0o755)
	listen := freePort(t)
	os.WriteFile(filepath.Join(stacks, "dev.hcl"), []byte(fmt.Sprintf(`
stack "dev" {
  service "echo.dev" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = "30s"
  }
}
`, listen)), 0o644)
	grpcPort := freePort(t)
	cfgFile := filepath.Join(dir, "dev.hcl")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
node_name = "dev-test"
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
  http_addr = "127.0.0.1:%d"
  servers   = ["127.0.0.1:%d"]
}
client {
  servers = ["127.0.0.1:%d"]
  service "echo.dev" {
    stack          = "dev"
    port           = %d
    check_interval = "1s"
  }
}
`, freePort(t), grpcPort, srv.HTTPAddr, stacks, freePort(t), grpcPort, grpcPort, echo.Addr().(*net.TCPAddr).Port)), 0o644)
	res := config.Load([]config.Source{{Path: cfgFile}}, true) // -dev, then the file
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	a, err := New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "dev", Level: hclog.Warn, Output: testWriter{t}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "the node's control channel", 20*time.Second, func() bool {
		_, body := get(t, "http://"+a.HTTPAddr()+"/v1/agent/self")
		var self struct {
			Status struct {
				Client struct {
					Connected bool `json:"connected"`
				} `json:"client"`
			} `json:"status"`
		}
		return json.Unmarshal([]byte(body), &self) == nil && self.Status.Client.Connected
	})
	waitFor(t, "a relayed round trip through the proxy", 45*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", listen), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return false
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		return err == nil && string(buf) == "ping"
	})
}
