package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Scenario 10: restarting an agent keeps the tunnels of live sessions, whether it is killed
// (kill -9, as a crash does) or stopped gracefully (SIGTERM, as `systemctl restart` for an
// upgrade does: the agent leaves its tunnel ends and Consul registrations in place,
// client.keep_tunnels_on_stop). The restarted agent keeps the complete tunnel ends it finds,
// reports them in its Hello, and the server keeps the sessions they belong to.

const (
	bigFile = "big.bin"
	bigSize = 24 << 20 // at bigRate: about 12 s, long enough to restart an agent in the middle
	bigRate = "2M"
	// restartPause is how long an agent stays dead: the tunnel must carry meanwhile.
	restartPause = 2 * time.Second
)

// session is one row of the server's /v1/sessions.
type sessionRow struct {
	ID       string `json:"id"`
	Service  string `json:"service"`
	ClientIP string `json:"client_ip"`
	NetID    uint32 `json:"net_id"`
	Upstream string `json:"upstream_ip"`
	Uses     int    `json:"uses"`
	State    string `json:"state"`
	Replica  struct {
		Node string `json:"node"`
	} `json:"replica"`
}

// findSession polls for the active session of service whose client is the outside host, on
// node when node is not empty. An earlier scenario's session of the same service can still be
// there (idling out, or tearing down on another replica): of several, the one with the most
// uses is the live one.
func findSession(service, node string) (sessionRow, error) {
	var found sessionRow
	err := poll(settle, func() error {
		var rows []sessionRow
		if err := getJSON(apiURL(hostCtl, "/v1/sessions"), &rows); err != nil {
			return err
		}
		ok := false
		for _, r := range rows {
			if r.Service != service || r.ClientIP != hostOut.ip || r.State != "active" || node != "" && r.Replica.Node != node {
				continue
			}
			if !ok || r.Uses > found.Uses {
				found, ok = r, true
			}
		}
		if !ok {
			return fmt.Errorf("no active session of %s for client %s (node %q) among %d", service, hostOut.ip, node, len(rows))
		}
		return nil
	})
	return found, err
}

// writeBigFile puts the same random file into both nodes' web roots and returns its SHA-256.
func (c *cluster) writeBigFile() (string, error) {
	b := make([]byte, bigSize)
	_, _ = rand.Read(b)
	sum := sha256.Sum256(b)
	for _, h := range []*host{hostN1, hostN2} {
		if err := os.WriteFile(filepath.Join(c.dir, "svc-"+h.name, "www", bigFile), b, 0o644); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(sum[:]), nil
}

// download fetches url at bigRate inside ns (extra curl arguments first) and returns the SHA-256
// of what arrived and the HTTP status, or the error.
func download(ns string, extra ...string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		cmd := fmt.Sprintf("set -o pipefail; curl -sS --fail --max-time 60 --limit-rate %s %s | sha256sum", bigRate, strings.Join(extra, " "))
		out, err := nsRun(70*time.Second, ns, "bash", "-c", cmd)
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		f := strings.Fields(out)
		if len(f) == 0 {
			ch <- "error: no output"
			return
		}
		ch <- f[0]
	}()
	return ch
}

// killAgent kills a host's nullnet agent with SIGKILL: no shutdown path runs.
func (c *cluster) killAgent(h *host) {
	c.mu.Lock()
	p := c.agents[h.name]
	delete(c.agents, h.name)
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.stopped.Do(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// termAgent stops a host's agent with SIGTERM (the graceful path) and returns at once; wait
// waits for the process to exit and reports whether it did within d (else it is killed).
func (c *cluster) termAgent(h *host) (wait func(d time.Duration) error) {
	c.mu.Lock()
	p := c.agents[h.name]
	delete(c.agents, h.name)
	c.mu.Unlock()
	if p == nil {
		return func(time.Duration) error { return fmt.Errorf("no agent runs on %s", h.name) }
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	return func(d time.Duration) error {
		select {
		case <-p.done:
			// The graceful path ran and kept the ends (client.keep_tunnels_on_stop).
			if log := p.logTail(64 << 10); !strings.Contains(log, "tunnel ends left in place") {
				return fmt.Errorf("the agent on %s exited without keeping its tunnel ends:\n%s", h.name, p.logTail(3000))
			}
			return nil
		case <-time.After(d):
			p.stop(0) // SIGKILL
			return fmt.Errorf("the agent on %s did not exit within %v of SIGTERM", h.name, d)
		}
	}
}

func testAgentRestart(t *testing.T, c *cluster) {
	sum, err := c.writeBigFile()
	if err != nil {
		t.Fatal(err)
	}
	kill := func(t *testing.T, h *host, _ func()) { c.killAgent(h) }
	term := func(t *testing.T, h *host, afterSignal func()) {
		wait := c.termAgent(h)
		if afterSignal != nil {
			afterSignal()
		}
		if err := wait(15 * time.Second); err != nil {
			t.Error(err)
		}
	}
	t.Run("NodeAgent", func(t *testing.T) { testNodeAgentRestart(t, c, sum, kill) })
	t.Run("ProxyAgent", func(t *testing.T) { testProxyAgentRestart(t, c, sum, kill) })
	t.Run("NodeAgentSIGTERM", func(t *testing.T) { testNodeAgentRestart(t, c, sum, term) })
	t.Run("ProxyAgentSIGTERM", func(t *testing.T) { testProxyAgentRestart(t, c, sum, term) })
	// Nothing leaks: once the sessions idled out, no tunnel device is left anywhere.
	if err := poll(teardown+10*time.Second, noTunnels); err != nil {
		t.Errorf("after the transfers ended: %v", err)
	}
}

// stopFunc stops a host's agent (killed, or SIGTERM); afterSignal, if not nil, runs once the
// signal is sent, before the process has exited.
type stopFunc func(t *testing.T, h *host, afterSignal func())

// A download through the proxy (user-space relay on edge, kernel tunnel to the node) survives
// the serving node's agent being stopped and restarted.
func testNodeAgentRestart(t *testing.T, c *cluster, sum string, stop stopFunc) {
	start := time.Now()
	done := download(hostOut.ns, "-H", "'Host: "+webHost+"'", fmt.Sprintf("http://%s/%s", hostEdge.ip, bigFile))
	s, err := findSession(webHost, "")
	if err != nil {
		t.Fatalf("the download's session: %v", err)
	}
	svc := hostByName(s.Replica.Node)
	if svc == nil {
		t.Fatalf("session %+v is on no node", s)
	}
	time.Sleep(time.Second)
	select {
	case r := <-done:
		t.Fatalf("the download ended before the agent was killed (%s): make it longer", r)
	default:
	}
	t.Logf("session %s (net id %d) on %s; stopping its agent", s.ID, s.NetID, svc.name)
	stopped := time.Now()
	stop(t, svc, nil)
	t.Logf("%s's agent stopped in %v", svc.name, time.Since(stopped).Round(time.Millisecond))
	if devs, err := svc.tunnelDevices("s"); err != nil || !slices.Contains(devs, fmt.Sprintf("vx_%d_s", s.NetID)) {
		t.Errorf("the stopped agent did not leave the session's end in place: %v %v", devs, err)
	}
	time.Sleep(restartPause)
	if err := c.startAgent(svc); err != nil {
		t.Fatalf("restarting %s's agent: %v", svc.name, err)
	}
	select {
	case r := <-done:
		if r != sum {
			t.Fatalf("download through the restart: %s, want sha256 %s", r, sum)
		}
	case <-time.After(80 * time.Second):
		t.Fatal("the download never ended")
	}
	t.Logf("%d MiB downloaded in %v across the restart of %s's agent", bigSize>>20, time.Since(start).Round(100*time.Millisecond), svc.name)
	after, err := findSession(webHost, s.Replica.Node)
	if err != nil || after.ID != s.ID || after.NetID != s.NetID {
		t.Errorf("the session after the restart: %+v (%v), want %s with net id %d", after, err, s.ID, s.NetID)
	}
	if ev, err := apiEvents(); err == nil {
		for _, reason := range []string{"end_lost", "replica_gone", "replica_unhealthy", "node_gone"} {
			if e, ok := findEvent(ev, "session_torn_down", s.ID, reason); ok {
				t.Errorf("the session was torn down (%s): %s", reason, e)
			}
		}
	}
}

// The proxy host's agent: its user-space relays die with it (a client reconnects), but its tunnel
// ends stay, so a transfer the kernel carries over the tunnel (here: a download from the proxy
// host straight to the upstream address, as the kernel fast path's flows are) goes on, and the
// reconnecting client joins the same session and tunnel.
func testProxyAgentRestart(t *testing.T, c *cluster, sum string, stop stopFunc) {
	addr := fmt.Sprintf("%s:%d", hostEdge.ip, redisListen)
	rc, err := dialRedis(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer rc.Close()
	who, err := rc.do("GET whoami")
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	s, err := findSession("redis", who)
	if err != nil {
		t.Fatalf("the redis session: %v", err)
	}
	if s.Replica.Node != who || s.Upstream == "" {
		t.Fatalf("session %+v, served by %s", s, who)
	}
	start := time.Now()
	done := download(hostEdge.ns, fmt.Sprintf("http://%s:%d/%s", s.Upstream, webPort, bigFile))
	time.Sleep(time.Second)
	select {
	case r := <-done:
		t.Fatalf("the download ended before the agent was killed (%s)", r)
	default:
	}
	t.Logf("session %s (net id %d, upstream %s on %s); stopping edge's agent", s.ID, s.NetID, s.Upstream, who)
	// A SIGTERM'd proxy drains: it waits for the relayed redis connection, which the client
	// closes (as a user's client does when the proxy stops accepting).
	stop(t, hostEdge, func() { rc.Close() })
	if devs, err := hostEdge.tunnelDevices("c"); err != nil || !slices.Contains(devs, fmt.Sprintf("vx_%d_c", s.NetID)) {
		t.Errorf("the stopped proxy agent did not leave the session's end in place: %v %v", devs, err)
	}
	// Half the pause: the stopped proxy released its use, so the session idles out after the
	// stack's timeout (redisTimeout, 5 s) unless the client is back; pause plus start-up must
	// stay well inside it on a loaded machine.
	time.Sleep(restartPause / 2)
	if err := c.startAgent(hostEdge); err != nil {
		t.Fatalf("restarting edge's agent: %v", err)
	}
	// The client reconnects (its connection went with the relay) and lands on the same session:
	// this use keeps it alive past its timeout while the download runs.
	var rc2 *redisConn
	if err := poll(settle, func() error {
		r, err := dialRedis(addr)
		if err != nil {
			return err
		}
		if got, err := r.do("GET whoami"); err != nil || got != who {
			r.Close()
			return fmt.Errorf("whoami %q, %v; want %s", got, err, who)
		}
		rc2 = r
		return nil
	}); err != nil {
		t.Fatalf("reconnecting through the restarted proxy: %v", err)
	}
	defer rc2.Close()
	select {
	case r := <-done:
		if r != sum {
			t.Fatalf("download over the tunnel through the restart: %s, want sha256 %s", r, sum)
		}
	case <-time.After(80 * time.Second):
		t.Fatal("the download never ended")
	}
	t.Logf("%d MiB downloaded over the tunnel in %v across the restart of edge's agent", bigSize>>20, time.Since(start).Round(100*time.Millisecond))
	after, err := findSession("redis", who)
	if err != nil || after.ID != s.ID || after.NetID != s.NetID || after.Uses != 1 {
		t.Errorf("the session after the restart: %+v (%v), want %s with net id %d and 1 use (the old one released)",
			after, err, s.ID, s.NetID)
	}
	if out, err := rc2.do("PING"); err != nil || out != "PONG" {
		t.Errorf("PING on the new connection: %q, %v", out, err)
	}
}
