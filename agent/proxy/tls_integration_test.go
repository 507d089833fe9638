package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// TestTLSPassthroughWithServer: the whole path with a real server and Consul. A stack file
// declares two tls services on one port; the server mirrors them, publishes both in the port
// table, the proxy opens one listener, and `openssl s_client -servername` reaches each service's
// own TLS backend through the Proxy RPC; every use is released when the connection ends. A
// stack that puts a tcp service on that port is rejected and changes nothing.
func TestTLSPassthroughWithServer(t *testing.T) {
	e := startServer(t)
	a, b := startTLSBackend(t, "a.example"), startTLSBackend(t, "b.example")
	port := freePort(t)
	stack := fmt.Sprintf(`
  service "a.example" {
    protocol    = "tls"
    listen_port = %d
    timeout     = "30s"
  }
  service "b.example" {
    protocol    = "tls"
    listen_port = %d
    timeout     = 0
  }
`, port, port)
	e.writeStack(stack)
	e.replica("a-1", "a.example", a.port())
	e.replica("b-1", "b.example", b.port())

	logger := hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Info, Output: testWriter{t}})
	tp := startProxy(t, newGRPCResolver(e.conn, "nnpx-proxy", logger.Named("resolver")), func(a *config.Config, c *Config) {
		a.NodeName = "nnpx-proxy"
		c.Conn = e.conn
		c.Logger = logger
	})
	tp.waitListening(t, TLS, port)
	if l, _ := tp.listener(TLS, port); l.Service != "a.example,b.example" {
		t.Fatalf("listener %+v", l)
	}

	for _, be := range []*tlsBackend{a, b} {
		var out string
		// The replica's health reaches the server's view through Consul: retry briefly.
		waitFor(t, 30*time.Second, be.name+" reachable", func() bool {
			out = sClient(t, port, be.name, "nullnet-test", "ping\n")
			return strings.Contains(out, "backend="+be.name)
		})
		if cn := subjectCN(out); cn != be.name {
			t.Errorf("%s: certificate CN %q\n%s", be.name, cn, out)
		}
		if want := fmt.Sprintf("backend=%s sni=%s alpn=nullnet-test", be.name, be.name); !strings.Contains(out, want) || !strings.Contains(out, "echo ping") {
			t.Errorf("%s: output lacks %q:\n%s", be.name, want, out)
		}
	}
	waitFor(t, 10*time.Second, "uses released", func() bool {
		u := e.uses()
		return u["a.example"] == 0 && u["b.example"] == 0
	})
	if out := sClient(t, port, "c.example", "", "ping\n"); strings.Contains(out, "backend=") {
		t.Fatalf("unknown name relayed:\n%s", out)
	}
	waitFor(t, 5*time.Second, "tls_connection_unrouted", func() bool { return tp.hasEvent(events.TLSConnectionUnrouted) })

	// A tcp service on the same port: the whole set is rejected, the listener stays.
	after := e.events.Index()
	e.writeStack(stack + fmt.Sprintf("  service \"raw\" {\n    protocol = \"tcp\"\n    listen_port = %d\n    timeout = 0\n  }\n", port))
	evs, _ := e.events.Since(after)
	var rejected string
	for _, ev := range evs {
		if ev.Kind == events.ConfigReloadRejected {
			rejected = ev.Message + " " + ev.Fields["diagnostics"]
		}
	}
	if !strings.Contains(rejected, "Conflicting listen_port") || !strings.Contains(rejected, "a tcp and a tls service cannot share a port") {
		t.Fatalf("stack with a tcp service on the tls port: %q", rejected)
	}
	if out := sClient(t, port, "a.example", "", "ping\n"); !strings.Contains(out, "backend=a.example") {
		t.Fatalf("a.example not routed after the rejected reload:\n%s", out)
	}
}
