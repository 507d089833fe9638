package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/consul/consultest"
)

// Ports the suite uses. Services listen on their usual-looking ports on the nodes; the proxy
// exposes them on distinct listen ports on edge.
const (
	redisPort    = 6379
	dnsPort      = 5353
	webPort      = 8080
	sshPort      = 2222
	redisListen  = 16379
	dnsListen    = 15353
	sshListen    = 12222
	hotListen    = 16380
	apiPort      = 4700
	grpcPort     = 4701
	consulHTTP   = 8500
	webHost      = "web.e2e.test"
	dnsName      = "www.e2e.test"
	dnsAnswer    = "10.1.2.3"
	redisTimeout = 5 * time.Second
	// nodeGrace outlasts an agent restart (scenario 10: restartPause plus the start) and keeps
	// scenario 7's wait short.
	nodeGrace     = 8 * time.Second
	stackFileName = "e2e.hcl"
)

// The stack the server starts with: one service per protocol, all proxy-reachable.
var baseStack = fmt.Sprintf(`stack "e2e" {
  service "redis" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = "%s"
  }
  service "dns" {
    protocol    = "udp"
    listen_port = %d
    timeout     = "%s"
  }
  service %q {
    timeout = "%s"
  }
  service "ssh" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = "%s"
  }
}
`, redisListen, redisTimeout, dnsListen, redisTimeout, webHost, redisTimeout, sshListen, redisTimeout)

// cluster is the shared environment of every scenario.
type cluster struct {
	dir       string // everything on disk: configs, data dirs, logs, keys
	logDir    string
	nullnet   string // bin/nullnet
	consulBin string
	stacksDir string
	sshKey    string  // private key authorised on node1's sshd
	web       *webPKI // the public-facing CA of the HTTPS scenario

	mu     sync.Mutex
	agents map[string]*proc // nullnet agent per host name
	others []*proc          // consul agents and services
}

var (
	clusterOnce sync.Once
	shared      *cluster
	sharedErr   error
)

// getCluster starts the cluster on first use; every scenario shares it.
func getCluster(t *testing.T) *cluster {
	t.Helper()
	clusterOnce.Do(func() {
		start := time.Now()
		shared, sharedErr = startCluster(t)
		if sharedErr != nil && shared != nil {
			shared.dumpLogs(t)
		}
		t.Logf("cluster started in %v", time.Since(start).Round(time.Millisecond))
	})
	if sharedErr != nil {
		t.Fatalf("cluster did not start: %v", sharedErr)
	}
	return shared
}

func startCluster(t *testing.T) (*cluster, error) {
	if err := ensurePackages(t); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", tempDirStart+thisRun.prefix+"-")
	if err != nil {
		return nil, err
	}
	if os.Getenv("NULLNET_E2E_KEEP") != "" {
		if err := os.WriteFile(filepath.Join(dir, keepMarker), nil, 0o644); err != nil {
			return nil, err
		}
	}
	registry.add("temp dir", func() {
		if os.Getenv("NULLNET_E2E_KEEP") == "" {
			os.RemoveAll(dir)
		}
	})
	c := &cluster{dir: dir, logDir: filepath.Join(dir, "logs"), stacksDir: filepath.Join(dir, "stacks"),
		agents: map[string]*proc{}}
	for _, d := range []string{c.logDir, c.stacksDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	t.Logf("cluster files in %s (set NULLNET_E2E_KEEP=1 to keep them)", dir)
	if c.nullnet, err = nullnetBinary(dir); err != nil {
		return nil, err
	}
	if c.consulBin, err = consultest.FindBinary(); err != nil {
		return nil, err
	}
	if err := buildUnderlay(); err != nil {
		return c, err
	}
	if err := c.startConsul(); err != nil {
		return c, err
	}
	if err := c.startServices(); err != nil {
		return c, err
	}
	if err := os.WriteFile(filepath.Join(c.stacksDir, stackFileName), []byte(baseStack), 0o644); err != nil {
		return c, err
	}
	if err := c.makePKI(); err != nil {
		return c, err
	}
	if err := c.makeWebCerts(); err != nil {
		return c, err
	}
	for _, h := range []*host{hostCtl, hostN1, hostN2, hostEdge} {
		if err := c.writeAgentConfig(h); err != nil {
			return c, err
		}
		if err := c.startAgent(h); err != nil {
			return c, err
		}
	}
	return c, nil
}

// nullnetBinary is $NULLNET_BIN, or a fresh build of the module's main package.
func nullnetBinary(dir string) (string, error) {
	if p := os.Getenv("NULLNET_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("NULLNET_BIN: %w", err)
		}
		return p, nil
	}
	out := filepath.Join(dir, "nullnet")
	cmd := exec.Command("go", "build", "-o", out, "github.com/nullnet/nullnet")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building nullnet (set NULLNET_BIN to skip): %w: %s", err, b)
	}
	return out, nil
}

// ensurePackages installs the Debian packages that provide the services and clients when one is
// missing. A failure names what to install.
func ensurePackages(t *testing.T) error {
	need := map[string]string{
		"redis-server": "redis-server", "redis-cli": "redis-tools", "dnsmasq": "dnsmasq-base",
		"sshd": "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
		"dig": "dnsutils", "curl": "curl", "python3": "python3",
	}
	var missing []string
	for bin, pkg := range need {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				missing = append(missing, pkg)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	t.Logf("installing %v with apt-get", missing)
	args := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := run(ctx, "apt-get", args...); err != nil {
		if _, uerr := run(ctx, "apt-get", "update"); uerr != nil {
			return fmt.Errorf("e2e needs %v (apt-get install -y %s): %w", missing, strings.Join(missing, " "), err)
		}
		if _, err := run(ctx, "apt-get", args...); err != nil {
			return fmt.Errorf("e2e needs %v (apt-get install -y %s): %w", missing, strings.Join(missing, " "), err)
		}
	}
	return nil
}

// startConsul runs a Consul server in ctl and client agents in the other hosts, and waits for
// all four to be in the catalog.
func (c *cluster) startConsul() error {
	for _, h := range []*host{hostCtl, hostEdge, hostN1, hostN2} {
		data := filepath.Join(c.dir, "consul-"+h.name)
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		args := []string{c.consulBin, "agent", "-node", h.name, "-data-dir", data,
			"-bind", h.ip, "-advertise", h.ip, "-log-level", "warn",
			"-hcl", "performance { raft_multiplier = 1 }"}
		if h == hostCtl {
			args = append(args, "-server", "-bootstrap-expect", "1", "-ui",
				"-client", "127.0.0.1 "+h.ip)
		} else {
			args = append(args, "-client", "127.0.0.1", "-retry-join", hostCtl.ip, "-retry-interval", "1s")
		}
		p, err := startProc(h.ns, "consul-"+h.name, c.logDir, args...)
		if err != nil {
			return err
		}
		c.others = append(c.others, p)
	}
	url := fmt.Sprintf("http://%s:%d/v1/catalog/nodes", hostCtl.ip, consulHTTP)
	return poll(90*time.Second, func() error {
		var nodes []struct{ Node string }
		if err := getJSON(url, &nodes); err != nil {
			return err
		}
		if len(nodes) < 4 {
			return fmt.Errorf("consul catalog has %d of 4 nodes", len(nodes))
		}
		return nil
	})
}

// startServices runs the real services: redis on node1 and node2 (each knowing its own name
// under the key "whoami"), dnsmasq, an HTTP server on both nodes, sshd on node1.
func (c *cluster) startServices() error {
	for _, h := range []*host{hostN1, hostN2} {
		d := filepath.Join(c.dir, "svc-"+h.name)
		if err := os.MkdirAll(filepath.Join(d, "www"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d, "www", "index.html"), []byte("hello from "+h.name+"\n"), 0o644); err != nil {
			return err
		}
		redis, err := startProc(h.ns, "redis-"+h.name, c.logDir, "redis-server", "--bind", "0.0.0.0",
			"--port", fmt.Sprint(redisPort), "--save", "", "--appendonly", "no", "--protected-mode", "no",
			"--dir", d, "--daemonize", "no")
		if err != nil {
			return err
		}
		web, err := startProc(h.ns, "web-"+h.name, c.logDir, "python3", "-m", "http.server",
			fmt.Sprint(webPort), "--bind", "0.0.0.0", "--directory", filepath.Join(d, "www"))
		if err != nil {
			return err
		}
		c.others = append(c.others, redis, web)
		hn := h
		if err := poll(30*time.Second, func() error {
			_, err := nsRun(10*time.Second, hn.ns, "redis-cli", "-p", fmt.Sprint(redisPort), "SET", "whoami", hn.name)
			return err
		}); err != nil {
			return fmt.Errorf("redis on %s: %w", h.name, err)
		}
	}
	d := filepath.Join(c.dir, "svc-node1")
	dns, err := startProc(hostN1.ns, "dnsmasq-node1", c.logDir, "dnsmasq", "--keep-in-foreground",
		"--no-resolv", "--no-hosts", "--port", fmt.Sprint(dnsPort), "--address=/e2e.test/"+dnsAnswer,
		"--pid-file="+filepath.Join(d, "dnsmasq.pid"), "--log-facility=-", "--log-queries", "--user=root")
	if err != nil {
		return err
	}
	c.others = append(c.others, dns)
	return c.startSSHD(d)
}

// startSSHD runs sshd on node1 with a host key and an authorised client key made here.
func (c *cluster) startSSHD(d string) error {
	hostKey := filepath.Join(d, "ssh_host_ed25519_key")
	c.sshKey = filepath.Join(c.dir, "id_ed25519")
	for _, k := range []string{hostKey, c.sshKey} {
		if _, err := run(nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k); err != nil {
			return err
		}
	}
	pub, err := os.ReadFile(c.sshKey + ".pub")
	if err != nil {
		return err
	}
	auth := filepath.Join(d, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		return err
	}
	// sshd insists on its privilege-separation directory; create it only if missing and remove
	// it again, leaving the machine as found, unless another run (whose sshd needs it too) is
	// still alive then.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return err
		}
		registry.add("/run/sshd", func() {
			if !otherLiveRuns() {
				os.Remove("/run/sshd")
			}
		})
	}
	cfg := filepath.Join(d, "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 0.0.0.0
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`, sshPort, hostKey, filepath.Join(d, "sshd.pid"), auth)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}
	sshd, err := startProc(hostN1.ns, "sshd-node1", c.logDir, "/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	if err != nil {
		return err
	}
	c.others = append(c.others, sshd)
	return nil
}

// agentConfig is the HCL an operator would write for each host.
func (c *cluster) agentConfig(h *host) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node_name = %q\ndata_dir = %q\nadvertise_addr = %q\nlog_level = \"debug\"\n",
		h.name, filepath.Join(c.dir, "nullnet-"+h.name), h.ip)
	// The suite calls every host's API from outside its namespace (over TLS).
	b.WriteString("client_addr = \"0.0.0.0\"\n")
	fmt.Fprintf(&b, "ports {\n  http = %d\n  grpc = %d\n}\n", apiPort, grpcPort)
	fmt.Fprintf(&b, "consul {\n  address = \"127.0.0.1:%d\"\n}\n", consulHTTP)
	b.WriteString(c.tlsBlock(h.name))
	servers := fmt.Sprintf("[\"%s:%d\"]", hostCtl.ip, grpcPort)
	switch h {
	case hostCtl:
		fmt.Fprintf(&b, "server {\n  enabled = true\n  stacks_dir = %q\n  certs_dir = %q\n  network = \"vxlan\"\n  node_grace_period = \"%s\"\n}\n",
			c.stacksDir, c.certsDir(), nodeGrace)
	case hostEdge:
		fmt.Fprintf(&b, "proxy {\n  enabled = true\n  servers = %s\n  http_addr = \":80\"\n  https_addr = \":443\"\n}\n", servers)
		fmt.Fprintf(&b, "client {\n  enabled = true\n  servers = %s\n}\n", servers)
	case hostN1:
		fmt.Fprintf(&b, "client {\n  enabled = true\n  servers = %s\n", servers)
		b.WriteString(hostService("redis", "e2e", redisPort, "tcp"))
		b.WriteString(hostService("dns", "e2e", dnsPort, "udp"))
		b.WriteString(hostService(webHost, "e2e", webPort, "tcp"))
		b.WriteString(hostService("ssh", "e2e", sshPort, "tcp"))
		b.WriteString("}\n")
	case hostN2:
		fmt.Fprintf(&b, "client {\n  enabled = true\n  servers = %s\n", servers)
		b.WriteString(hostService("redis", "e2e", redisPort, "tcp"))
		b.WriteString(hostService(webHost, "e2e", webPort, "tcp"))
		// Served only once the "hot" stack file exists (scenario 5).
		b.WriteString(hostService("redis-hot", "hot", redisPort, "tcp"))
		b.WriteString("}\n")
	}
	return b.String()
}

func hostService(name, stack string, port int, proto string) string {
	return fmt.Sprintf("  service %q {\n    stack = %q\n    port = %d\n    protocol = %q\n    check_interval = \"1s\"\n  }\n",
		name, stack, port, proto)
}

func (c *cluster) configPath(h *host) string { return filepath.Join(c.dir, "agent-"+h.name+".hcl") }

func (c *cluster) writeAgentConfig(h *host) error {
	if err := os.MkdirAll(filepath.Join(c.dir, "nullnet-"+h.name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.configPath(h), []byte(c.agentConfig(h)), 0o644)
}

// startAgent starts (or restarts) the nullnet agent of a host and waits for its HTTP API.
func (c *cluster) startAgent(h *host) error {
	c.stopAgent(h)
	p, err := startProc(h.ns, "nullnet-"+h.name, c.logDir, c.nullnet, "agent", "-config-file", c.configPath(h))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.agents[h.name] = p
	c.mu.Unlock()
	url := apiURL(h, "/v1/agent/self")
	return poll(30*time.Second, func() error {
		if !p.running() {
			return fmt.Errorf("nullnet agent on %s exited: %v\n%s", h.name, p.waitErr, p.logTail(4000))
		}
		return getJSON(url, &json.RawMessage{})
	})
}

// stopAgent stops a host's agent gracefully (SIGTERM), killing it after a grace period.
func (c *cluster) stopAgent(h *host) {
	c.mu.Lock()
	p := c.agents[h.name]
	delete(c.agents, h.name)
	c.mu.Unlock()
	if p != nil {
		p.stop(10 * time.Second)
	}
}

// dumpLogs prints the tail of every nullnet agent log (and Consul's when asked) into the test
// output: the first thing to read when a scenario fails.
func (c *cluster) dumpLogs(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range []*host{hostCtl, hostEdge, hostN1, hostN2} {
		if p := c.agents[h.name]; p != nil {
			t.Logf("---- log of nullnet agent on %s (%s) ----\n%s", h.name, p.logPath, p.logTail(6000))
		}
	}
	for _, p := range c.others {
		if !p.running() {
			t.Logf("---- %s exited (%v) ----\n%s", p.name, p.waitErr, p.logTail(2000))
		}
	}
}

// apiURL is a host's nullnet HTTP API.
func apiURL(h *host, path string) string { return fmt.Sprintf("https://%s:%d%s", h.ip, apiPort, path) }

var httpClient = &http.Client{Timeout: 15 * time.Second}

// getJSON GETs url and decodes a 200 answer into v.
func getJSON(url string, v any) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: decoding %q: %w", url, truncate(string(b), 300), err)
	}
	return nil
}

// poll calls f until it succeeds or the deadline passes; the error names the last failure.
func poll(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = f(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", d, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
