package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Deadlines for things that happen asynchronously in the cluster. Generous: the machine is
// shared and slow; the suite asserts correctness, not speed.
const (
	settleReady    = 60 * time.Second // a port, a table or a replica appears
	settleDegraded = 15 * time.Second // the same once 0_ClusterReady failed: fail fast, keep going
	teardown       = redisTimeout + 15*time.Second
)

// settle is how long a scenario waits for the cluster to converge. When the cluster never
// became ready every scenario still runs (each names what it could not do) but waits less, so a
// broken build fails in minutes rather than the suite's time limit.
var settle = settleReady

// TestE2E runs the scenarios of issue 7 in order against one shared cluster. The order matters
// only at the end: restarting the server (8), stopping node1's agent (7) and the UDP flood (11)
// come last because they disturb everyone else.
func TestE2E(t *testing.T) {
	c := getCluster(t)
	scenarios := []struct {
		name string
		fn   func(*testing.T, *cluster)
	}{
		{"0_ServicesAnswerDirectly", testServicesDirect},
		{"0_ClusterReady", testClusterReady},
		{"1_RedisThroughTCPProxy", testRedis},
		{"2_DNSThroughUDPRelay", testDNS},
		{"3_HTTPHostRouting", testHTTP},
		{"4_SSHThroughTCPProxy", testSSH},
		{"5_HotAddAndRemoveStack", testHotAdd},
		{"6_LivenessPastTimeout", testLiveness},
		{"9_InvalidStackChangesNothing", testBadInput},
		{"12_HTTPSAtTheEdge", testHTTPS},
		{"10_AgentRestartKeepsTunnels", testAgentRestart},
		{"8_ServerRestartKeepsTraffic", testServerRestart},
		{"7_NodeFailureFailsOver", testNodeFailure},
		// Last: the flood leaves hundreds of short sessions behind (they idle out within the
		// scenario) and loads every agent for seconds.
		{"11_UDPFloodSparesEstablishedFlow", testUDPFlood},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					c.dumpState(t)
				}
			}()
			s.fn(t, c)
		})
	}
	if os.Getenv("NULLNET_E2E_HOLD") != "" {
		// For a person debugging: the cluster stays up until the run is interrupted (the signal
		// handler in TestMain tears it down) or the test binary's -timeout.
		t.Logf("NULLNET_E2E_HOLD: cluster kept running in %s; interrupt to tear it down", c.dir)
		select {}
	}
}

// dumpState prints what a person needs to see first when a scenario failed.
func (c *cluster) dumpState(t *testing.T) {
	t.Logf("port mappings (ctl): %s", truncate(rawAPI(hostCtl, "/v1/port-mappings"), 2000))
	t.Logf("sessions (ctl): %s", truncate(rawAPI(hostCtl, "/v1/sessions"), 3000))
	t.Logf("listeners (edge): %s", truncate(rawAPI(hostEdge, "/v1/proxy/listeners"), 2000))
	if ev, err := apiEvents(); err == nil {
		if len(ev) > 30 {
			ev = ev[len(ev)-30:]
		}
		for _, e := range ev {
			t.Logf("event: %v", e)
		}
	} else {
		t.Logf("events: %v", err)
	}
	for _, h := range []*host{hostEdge, hostN1, hostN2} {
		l, _ := h.links()
		t.Logf("links on %s: %v", h.name, l)
	}
	c.dumpLogs(t)
}

// 0: the harness itself works: every service answers its real client from outside, directly,
// without nullnet. A failure here is the suite's, not nullnet's.
func testServicesDirect(t *testing.T, c *cluster) {
	checks := []struct {
		name string
		argv []string
		want string
	}{
		{"redis node1", []string{"redis-cli", "-h", hostN1.ip, "-p", fmt.Sprint(redisPort), "GET", "whoami"}, "node1"},
		{"redis node2", []string{"redis-cli", "-h", hostN2.ip, "-p", fmt.Sprint(redisPort), "GET", "whoami"}, "node2"},
		{"dnsmasq node1", []string{"dig", "@" + hostN1.ip, "-p", fmt.Sprint(dnsPort), dnsName, "A", "+short", "+tries=1", "+time=3"}, dnsAnswer},
		{"http node1", []string{"curl", "-sS", "--max-time", "10", fmt.Sprintf("http://%s:%d/", hostN1.ip, webPort)}, "hello from node1"},
		{"http node2", []string{"curl", "-sS", "--max-time", "10", fmt.Sprintf("http://%s:%d/", hostN2.ip, webPort)}, "hello from node2"},
		{"sshd node1", c.sshArgv(hostN1.ip, sshPort), "ssh-through-nullnet"},
	}
	for _, ck := range checks {
		if err := poll(30*time.Second, func() error {
			out, err := outside(ck.argv...)
			if err == nil && !strings.Contains(out, ck.want) {
				err = fmt.Errorf("output %q, want %q", truncate(out, 200), ck.want)
			}
			return err
		}); err != nil {
			t.Errorf("%s: %v", ck.name, err)
		}
	}
}

// 0: the cluster is whole: the server published the stack's port table and the proxy opened the
// listeners. Everything else depends on this, so its failure explains theirs.
func testClusterReady(t *testing.T, c *cluster) {
	want := []string{fmt.Sprint(redisListen), fmt.Sprint(dnsListen), fmt.Sprint(sshListen)}
	err := poll(settle, func() error {
		var table []map[string]any
		if err := getJSON(apiURL(hostCtl, "/v1/port-mappings"), &table); err != nil {
			return err
		}
		var ports []string
		for _, e := range table {
			ports = append(ports, fmt.Sprint(e["listen_port"]))
		}
		for _, p := range want {
			if !slices.Contains(ports, p) {
				return fmt.Errorf("port table has ports %v, want %v", ports, want)
			}
		}
		return nil
	})
	if err != nil {
		settle = settleDegraded
		t.Fatalf("server port table: %v", err)
	}
	err = poll(settle, func() error {
		_, err := outside("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", hostEdge.ip, redisListen))
		return err
	})
	if err != nil {
		settle = settleDegraded
		t.Fatalf("proxy listener %s:%d never accepted a connection from outside: %v", hostEdge.ip, redisListen, err)
	}
}

// 1: redis-cli PING/SET/GET through the proxy; the tunnel exists on both hosts while a
// connection is open.
func testRedis(t *testing.T, c *cluster) {
	if err := poll(settle, func() error {
		out, err := redisCLI(redisListen, "PING")
		if err == nil && out != "PONG" {
			return fmt.Errorf("PING answered %q", out)
		}
		return err
	}); err != nil {
		t.Fatalf("redis PING through the proxy: %v", err)
	}
	if out, err := redisCLI(redisListen, "SET", "e2e:greeting", "hello-through-nullnet"); err != nil || out != "OK" {
		t.Fatalf("SET: %q, %v", out, err)
	}
	if out, err := redisCLI(redisListen, "GET", "e2e:greeting"); err != nil || out != "hello-through-nullnet" {
		t.Fatalf("GET: %q, %v (want the value just SET: the same client is sticky to one replica)", out, err)
	}

	rc, err := dialRedis(fmt.Sprintf("%s:%d", hostEdge.ip, redisListen))
	if err != nil {
		t.Fatalf("dial from outside: %v", err)
	}
	defer rc.Close()
	node, err := rc.do("GET whoami")
	if err != nil {
		t.Fatalf("held connection: %v", err)
	}
	svc := hostByName(node)
	if svc == nil {
		t.Fatalf("GET whoami = %q, want node1 or node2", node)
	}
	t.Logf("served by %s", node)
	if err := poll(10*time.Second, func() error {
		return tunnelPresent(svc)
	}); err != nil {
		t.Fatalf("while the connection is open: %v", err)
	}
	if out, err := rc.do("PING"); err != nil || out != "PONG" {
		t.Fatalf("PING on held connection: %q, %v", out, err)
	}
}

func hostByName(name string) *host {
	for _, h := range []*host{hostN1, hostN2} {
		if h.name == name {
			return h
		}
	}
	return nil
}

// tunnelPresent checks the proxy side (edge) and the service side (svc) both have a bridge and
// a VXLAN device.
func tunnelPresent(svc *host) error {
	for _, end := range []struct {
		h    *host
		side string
	}{{hostEdge, "c"}, {svc, "s"}} {
		devs, err := end.h.tunnelDevices(end.side)
		if err != nil {
			return err
		}
		if !hasPrefix(devs, "br_") || !hasPrefix(devs, "vx_") {
			return fmt.Errorf("%s has tunnel devices %v, want br_N_%s and vx_N_%s", end.h.name, devs, end.side, end.side)
		}
	}
	return nil
}

func hasPrefix(list []string, p string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, p) })
}

// 2: dig through the UDP relay, several times, from several source ports (each a new UDP
// session on the proxy).
func testDNS(t *testing.T, c *cluster) {
	dig := func(srcPort int) (string, error) {
		argv := []string{"dig", "@" + hostEdge.ip, "-p", fmt.Sprint(dnsListen), dnsName, "A", "+short", "+tries=1", "+time=3"}
		if srcPort > 0 {
			argv = append(argv, "-b", fmt.Sprintf("%s#%d", hostOut.ip, srcPort))
		}
		out, err := outside(argv...)
		out = strings.TrimSpace(out)
		if err == nil && out != dnsAnswer {
			err = fmt.Errorf("dig answered %q, want %s", out, dnsAnswer)
		}
		return out, err
	}
	if err := poll(settle, func() error { _, err := dig(0); return err }); err != nil {
		t.Fatalf("DNS through the UDP relay: %v", err)
	}
	for i := 0; i < 3; i++ {
		for _, port := range []int{20053, 21053, 22053, 0} {
			if _, err := dig(port); err != nil {
				t.Errorf("round %d, source port %d: %v", i, port, err)
			}
		}
	}
}

// 3: curl with a Host header through the HTTP router; an unknown host gets a 404.
func testHTTP(t *testing.T, c *cluster) {
	url := fmt.Sprintf("http://%s/", hostEdge.ip)
	if err := poll(settle, func() error {
		out, err := outside("curl", "-sS", "--max-time", "10", "-H", "Host: "+webHost, url)
		if err == nil && !strings.Contains(out, "hello from node") {
			err = fmt.Errorf("body %q", truncate(out, 200))
		}
		return err
	}); err != nil {
		t.Fatalf("curl -H 'Host: %s' %s: %v", webHost, url, err)
	}
	out, err := outside("curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: nobody.e2e.test", url)
	if err != nil || strings.TrimSpace(out) != "404" {
		t.Errorf("unknown host: status %q, %v; want 404", out, err)
	}
}

// 4: ssh through the proxy to node1's sshd runs a command.
func testSSH(t *testing.T, c *cluster) {
	argv := c.sshArgv(hostEdge.ip, sshListen)
	if err := poll(settle, func() error {
		out, err := outside(argv...)
		if err == nil && !strings.Contains(out, "ssh-through-nullnet") {
			err = fmt.Errorf("output %q", out)
		}
		return err
	}); err != nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
}

// 5: a new stack file opens a new port without restarting anything; removing it closes it.
func testHotAdd(t *testing.T, c *cluster) {
	addr := fmt.Sprintf("%s:%d", hostEdge.ip, hotListen)
	if conn, err := dialFromOutside(addr); err == nil {
		conn.Close()
		t.Fatalf("%s accepts before the hot stack exists", addr)
	}
	pids := c.agentPIDs()
	file := filepath.Join(c.stacksDir, "hot.hcl")
	stack := fmt.Sprintf("stack \"hot\" {\n  service \"redis-hot\" {\n    protocol    = \"tcp\"\n    listen_port = %d\n    timeout     = \"%s\"\n  }\n}\n", hotListen, redisTimeout)
	if err := os.WriteFile(file, []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(file)
	if err := poll(settle, func() error {
		out, err := redisCLI(hotListen, "GET", "whoami")
		if err == nil && out != "node2" {
			err = fmt.Errorf("GET whoami = %q, want node2 (redis-hot is declared on node2 only)", out)
		}
		return err
	}); err != nil {
		t.Fatalf("new stack file: port %d never answered: %v", hotListen, err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := poll(settle, func() error {
		conn, err := dialFromOutside(addr)
		if err == nil {
			conn.Close()
			return fmt.Errorf("%s still accepts", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial %s: %v, want connection refused", addr, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("stack file removed: %v", err)
	}
	if now := c.agentPIDs(); !slices.Equal(now, pids) {
		t.Errorf("agents restarted during a stack change: pids %v, then %v", pids, now)
	}
}

// 6: a connection held open past the service's idle timeout keeps working; once it closes the
// tunnel is torn down on both hosts within the timeout and a few seconds.
func testLiveness(t *testing.T, c *cluster) {
	// Every earlier session has been idle for a while: all of them must be gone. This is also the
	// check that scenarios 1–5 left nothing behind.
	if err := poll(teardown+10*time.Second, noTunnels); err != nil {
		t.Fatalf("tunnels of earlier, closed sessions remain: %v", err)
	}
	rc, err := dialRedis(fmt.Sprintf("%s:%d", hostEdge.ip, redisListen))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer rc.Close()
	node, err := rc.do("GET whoami")
	if err != nil {
		t.Fatalf("first command: %v", err)
	}
	svc := hostByName(node)
	if svc == nil {
		t.Fatalf("GET whoami = %q", node)
	}
	hold := redisTimeout + 4*time.Second
	t.Logf("served by %s; holding the idle connection for %v (timeout %v)", node, hold, redisTimeout)
	time.Sleep(hold) // the point of the scenario: stay idle past the timeout
	if err := tunnelPresent(svc); err != nil {
		t.Errorf("tunnel gone while its connection is open: %v", err)
	}
	if out, err := rc.do("PING"); err != nil || out != "PONG" {
		t.Fatalf("PING after %v idle on an open connection: %q, %v", hold, out, err)
	}
	rc.Close()
	closed := time.Now()
	if err := poll(teardown, noTunnels); err != nil {
		t.Fatalf("after the connection closed: %v", err)
	}
	t.Logf("tunnel removed %v after the connection closed", time.Since(closed).Round(100*time.Millisecond))
}

// noTunnels checks that no nullnet tunnel device is left on edge, node1 or node2.
func noTunnels() error {
	for _, end := range []struct {
		h    *host
		side string
	}{{hostEdge, "c"}, {hostN1, "s"}, {hostN2, "s"}} {
		devs, err := end.h.tunnelDevices(end.side)
		if err != nil {
			return err
		}
		if len(devs) > 0 {
			return fmt.Errorf("%s still has %v", end.h.name, devs)
		}
	}
	return nil
}

// 9: an invalid stack file changes nothing, and the event names file:line:col.
func testBadInput(t *testing.T, c *cluster) {
	before := rawAPI(hostCtl, "/v1/port-mappings")
	file := filepath.Join(c.stacksDir, "bad.hcl")
	// Line 4: listen_port 0 is rejected.
	bad := "stack \"bad\" {\n  service \"broken\" {\n    protocol    = \"tcp\"\n    listen_port = 0\n    timeout     = \"5s\"\n  }\n}\n"
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(file)
	pos := regexp.MustCompile(`bad\.hcl:4:\d+`)
	var found string
	if err := poll(settle, func() error {
		events, err := apiEvents()
		if err != nil {
			return err
		}
		for _, e := range events {
			if e["kind"] != "config_reload_rejected" {
				continue
			}
			s := fmt.Sprint(e)
			if pos.MatchString(s) {
				found = s
				return nil
			}
		}
		return errors.New("no config_reload_rejected event naming bad.hcl:4:<col>")
	}); err != nil {
		t.Fatalf("invalid stack file: %v", err)
	}
	t.Logf("event: %s", found)
	if after := rawAPI(hostCtl, "/v1/port-mappings"); after != before {
		t.Errorf("port table changed after a rejected reload:\nbefore %s\nafter  %s", before, after)
	}
	if out, err := redisCLI(redisListen, "PING"); err != nil || out != "PONG" {
		t.Errorf("redis after a rejected reload: %q, %v", out, err)
	}
}

// 8: restarting the server keeps an established connection working and the proxy's listeners
// open.
func testServerRestart(t *testing.T, c *cluster) {
	rc, err := dialRedis(fmt.Sprintf("%s:%d", hostEdge.ip, redisListen))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer rc.Close()
	if out, err := rc.do("PING"); err != nil || out != "PONG" {
		t.Fatalf("PING before restart: %q, %v", out, err)
	}
	c.stopAgent(hostCtl)
	// With the server down, the listener stays open (accepts) and the tunnel keeps carrying.
	// A reset is fine: the listener accepted, then the proxy closed the connection because
	// nobody can resolve an upstream now. Refused (or no answer) means the listener is gone.
	conn, err := dialFromOutside(fmt.Sprintf("%s:%d", hostEdge.ip, redisListen))
	switch {
	case err == nil:
		conn.Close()
	case errors.Is(err, syscall.ECONNRESET):
	default:
		t.Errorf("proxy listener closed while the server is down: %v", err)
	}
	if out, err := rc.do("PING"); err != nil || out != "PONG" {
		t.Errorf("PING while the server is down: %q, %v", out, err)
	}
	if err := c.startAgent(hostCtl); err != nil {
		t.Fatalf("restarting the server: %v", err)
	}
	if out, err := rc.do("PING"); err != nil || out != "PONG" {
		t.Errorf("PING on the established connection after restart: %q, %v", out, err)
	}
	if err := poll(settle, func() error {
		out, err := redisCLI(redisListen, "PING")
		if err == nil && out != "PONG" {
			err = fmt.Errorf("PING answered %q", out)
		}
		return err
	}); err != nil {
		t.Errorf("new connection after the server restarted: %v", err)
	}
	time.Sleep(2 * time.Second) // let the restarted server re-learn sessions before the next check
	if out, err := rc.do("PING"); err != nil || out != "PONG" {
		t.Errorf("PING on the established connection a while after restart: %q, %v", out, err)
	}
}

// 7: stopping node1's agent (SIGTERM, which leaves node1's own tunnel ends in place) tears its
// sessions down once node_grace_period has passed (on the server and the proxy's tunnel end);
// the replicated service is then served from node2. The deferred restart of node1's agent
// removes the ends it left (stale).
func testNodeFailure(t *testing.T, c *cluster) {
	defer func() {
		if err := c.startAgent(hostN1); err != nil {
			t.Errorf("restarting node1's agent: %v", err)
		}
	}()
	// Hold a connection on node1 so that its session cannot end by idling out: only the node's
	// failure may remove it. Two distinct clients (outside and the root namespace) spread over
	// the two replicas, the least loaded first.
	addr := fmt.Sprintf("%s:%d", hostEdge.ip, redisListen)
	var onNode1 *redisConn
	for _, dial := range []func(string) (*redisConn, error){dialRedis, dialRedisFromRoot} {
		rc, err := dial(addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer rc.Close()
		if who, err := rc.do("GET whoami"); err != nil {
			t.Fatalf("redis before the failure: %v", err)
		} else if who == "node1" {
			onNode1 = rc
			break
		}
	}
	if onNode1 == nil {
		t.Fatalf("two distinct clients were both served by node2: replica choice ignores load")
	}
	ids, err := sessionNetIDs("node1")
	if err != nil || len(ids) == 0 {
		t.Fatalf("no session on node1 in /v1/sessions (%v): %s", err, truncate(rawAPI(hostCtl, "/v1/sessions"), 800))
	}
	t.Logf("node1 holds sessions with net ids %v; stopping its agent", ids)
	c.stopAgent(hostN1)
	if err := poll(nodeGrace+settle, func() error {
		now, err := sessionNetIDs("node1")
		if err != nil {
			return err
		}
		if len(now) > 0 {
			return fmt.Errorf("sessions on node1 remain: net ids %v", now)
		}
		devs, err := hostEdge.tunnelDevices("c")
		if err != nil {
			return err
		}
		for _, id := range ids {
			if slices.Contains(devs, fmt.Sprintf("br_%d_c", id)) || slices.Contains(devs, fmt.Sprintf("vx_%d_c", id)) {
				return fmt.Errorf("edge still has the proxy end of net id %d: %v", id, devs)
			}
		}
		return nil
	}); err != nil {
		t.Errorf("node1's sessions not torn down: %v", err)
	}
	if err := poll(settle, func() error {
		out, err := redisCLI(redisListen, "GET", "whoami")
		if err == nil && out != "node2" {
			err = fmt.Errorf("served by %q", out)
		}
		return err
	}); err != nil {
		t.Fatalf("with node1's agent stopped, redis is not served from node2: %v", err)
	}
	for i := 0; i < 3; i++ {
		if out, err := redisCLI(redisListen, "GET", "whoami"); err != nil || out != "node2" {
			t.Errorf("connection %d: %q, %v; want node2", i, out, err)
		}
	}
}

// sessionNetIDs returns the net ids of the server's sessions whose replica is on node.
func sessionNetIDs(node string) ([]int, error) {
	var sessions []struct {
		NetID   int `json:"net_id"`
		Replica struct {
			Node string `json:"node"`
		} `json:"replica"`
	}
	if err := getJSON(apiURL(hostCtl, "/v1/sessions"), &sessions); err != nil {
		return nil, err
	}
	var ids []int
	for _, s := range sessions {
		if s.Replica.Node == node {
			ids = append(ids, s.NetID)
		}
	}
	return ids, nil
}

// sshArgv is an ssh client running `echo ssh-through-nullnet` with the suite's key.
func (c *cluster) sshArgv(ip string, port int) []string {
	return []string{"ssh", "-i", c.sshKey, "-p", fmt.Sprint(port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@" + ip, "echo", "ssh-through-nullnet"}
}

// agentPIDs lists the nullnet agents' process ids, in host order.
func (c *cluster) agentPIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pids []int
	for _, h := range []*host{hostCtl, hostEdge, hostN1, hostN2} {
		if p := c.agents[h.name]; p != nil {
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}
