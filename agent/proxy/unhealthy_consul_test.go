package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// greeter writes its name to every connection, then holds it open until the client leaves.
func greeter(name string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		_, _ = c.Write([]byte(name + "\n"))
		_, _ = io.Copy(io.Discard, c)
	}
}

// ncSession is a real `nc -d` client through the proxy: it prints what the upstream sends and
// exits when the connection ends.
type ncSession struct {
	cmd    *exec.Cmd
	lines  chan string
	exited chan struct{}
}

func startNC(t *testing.T, port uint16) *ncSession {
	t.Helper()
	if _, err := exec.LookPath("nc"); err != nil {
		t.Fatalf("nc is required (apt-get install netcat-openbsd): %v", err)
	}
	cmd := exec.Command("nc", "-d", "127.0.0.1", fmt.Sprint(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &ncSession{cmd: cmd, lines: make(chan string, 16), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		_ = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.exited
	})
	return s
}

func (s *ncSession) line(t *testing.T) string {
	t.Helper()
	select {
	case l := <-s.lines:
		return l
	case <-s.exited:
		return ""
	case <-time.After(30 * time.Second):
		t.Fatal("nc printed nothing within 30s")
		return ""
	}
}

// TestCloseOnUnhealthyWithConsul: a replica's TTL check is failed through the Consul API; the
// `nc` connection relayed to it by a service with close_on_unhealthy ends within a bound, a new
// one reaches the healthy replica, one event counts it, and a service without the key keeps
// its connection to its own critical replica.
func TestCloseOnUnhealthyWithConsul(t *testing.T) {
	e := startServer(t)
	sick, well := tcpUpstream(t, greeter("sick")), tcpUpstream(t, greeter("well"))
	keepSick := tcpUpstream(t, greeter("keep-sick"))
	pClose, pKeep := freePort(t), freePort(t)
	e.writeStack(fmt.Sprintf(`
  service "hc" {
    protocol           = "tcp"
    listen_port        = %d
    timeout            = 0
    close_on_unhealthy = true
  }
  service "keep" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = 0
  }
`, pClose, pKeep))
	e.replica("hc-sick", "hc", sick.Addr().(*net.TCPAddr).Port)
	e.replica("keep-sick", "keep", keepSick.Addr().(*net.TCPAddr).Port)

	logger := hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Info, Output: testWriter{t}})
	tp := startProxy(t, newGRPCResolver(e.conn, "nnpx-proxy", logger.Named("resolver")), func(a *config.Config, c *Config) {
		a.NodeName = "nnpx-proxy"
		c.Conn = e.conn
		c.Logger = logger
	})
	tp.waitListening(t, TCP, pClose)
	tp.waitListening(t, TCP, pKeep)
	waitFor(t, 30*time.Second, "the policy reached the proxy", func() bool {
		return tp.servicePolicy("hc").GetCloseOnUnhealthy()
	})

	// Until the server has seen the replica the proxy refuses at once: retry.
	var closing, keeping *ncSession
	waitFor(t, 30*time.Second, "nc reaches the sick replica", func() bool {
		closing = startNC(t, pClose)
		return closing.line(t) == "sick"
	})
	waitFor(t, 30*time.Second, "nc reaches keep's replica", func() bool {
		keeping = startNC(t, pKeep)
		return keeping.line(t) == "keep-sick"
	})
	e.replica("hc-well", "hc", well.Addr().(*net.TCPAddr).Port)

	failed := time.Now()
	for _, id := range []string{"nnpx-hc-sick", "nnpx-keep-sick"} {
		if err := e.consul.Agent().UpdateTTL(id, "failed by the test", api.HealthCritical); err != nil {
			t.Fatalf("failing %s: %v", id, err)
		}
	}
	const bound = 5 * time.Second
	select {
	case <-closing.exited:
		t.Logf("nc through the close_on_unhealthy service ended %v after the check failed", time.Since(failed).Round(time.Millisecond))
	case <-time.After(bound):
		t.Fatalf("nc still connected to the critical replica %v after its check failed", bound)
	}

	// A new client reaches the healthy replica.
	fresh := startNC(t, pClose)
	if got := fresh.line(t); got != "well" {
		t.Fatalf("new connection reached %q, want the healthy replica", got)
	}
	// Without the key the connection stays (the server drops its session; nothing cuts the
	// relay).
	select {
	case <-keeping.exited:
		t.Fatal("the connection of a service without close_on_unhealthy was ended")
	case <-time.After(time.Second):
	}

	var got []events.Event
	evs, _ := tp.events.Since(0)
	for _, ev := range evs {
		if ev.Kind == events.ConnectionsClosedUnhealthy {
			got = append(got, ev)
		}
	}
	if len(got) != 1 || got[0].Fields["service"] != "hc" || got[0].Fields["tcp_connections"] != "1" ||
		!strings.HasSuffix(got[0].Fields["replica"], "/hc-sick") {
		t.Fatalf("connections_closed_unhealthy events: %+v", got)
	}
}
