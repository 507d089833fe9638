package proxy

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// TestPolicyWithServer: a client policy written in a stack file reaches the proxy through a
// real server and Consul: the listed client is served, another is reset without a Proxy call;
// editing the stack changes who is served without reopening the listener.
func TestPolicyWithServer(t *testing.T) {
	e := startServer(t)
	up := tcpUpstream(t, echo)
	port := freePort(t)
	stack := func(allow string) string {
		return fmt.Sprintf(`
  service "pol" {
    protocol                   = "tcp"
    listen_port                = %d
    timeout                    = 0
    allow                      = [%s]
    max_connections_per_client = 2
  }
`, port, allow)
	}
	e.writeStack(stack(`"127.0.0.2"`))
	e.replica("pol-1", "pol", up.Addr().(*net.TCPAddr).Port)

	logger := hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Info, Output: testWriter{t}})
	tp := startProxy(t, newGRPCResolver(e.conn, "nnpx-proxy", logger.Named("resolver")), func(a *config.Config, c *Config) {
		a.NodeName = "nnpx-proxy"
		c.Conn = e.conn
		c.Logger = logger
	})
	tp.waitListening(t, TCP, port)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, 30*time.Second, "127.0.0.2 served through the server", func() bool { return tcpOutcome(t, "127.0.0.2", addr) == "served" })
	if got := tcpOutcome(t, "127.0.0.3", addr); got != "reset" {
		t.Errorf("client outside the allow-list: %s", got)
	}
	if !tp.hasEvent(events.ClientRefused) {
		t.Error("no client_refused event")
	}
	before, _ := tp.listener(TCP, port)

	e.writeStack(stack(`"127.0.0.3", "2001:db8::/32"`))
	waitFor(t, 30*time.Second, "the stack edit to reach the proxy", func() bool { return tcpOutcome(t, "127.0.0.3", addr) == "served" })
	if got := tcpOutcome(t, "127.0.0.2", addr); got != "reset" {
		t.Errorf("client removed from the allow-list: %s", got)
	}
	if after, _ := tp.listener(TCP, port); after.Since != before.Since {
		t.Errorf("listener reopened by a policy edit: %+v → %+v", before, after)
	}
	// Refused connections never became uses on the server.
	waitFor(t, 10*time.Second, "uses released", func() bool { return e.uses()["pol"] == 0 })
}
