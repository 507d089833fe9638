// Package consultest starts a real Consul dev agent for a test. There is no fake: without the
// binary built by scripts/install-consul the test fails and says how to get it.
package consultest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Version is the Consul release scripts/install-consul builds.
const Version = "1.16.3"

// Binary returns the path of the Consul binary: $NULLNET_CONSUL_BIN, the install-consul cache,
// or consul on PATH. It fails the test (never skips) when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := FindBinary()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

// FindBinary is Binary without a test.
func FindBinary() (string, error) {
	if p := os.Getenv("NULLNET_CONSUL_BIN"); p != "" {
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "nullnet", "consul-"+Version, "consul")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("consul binary not found: run scripts/install-consul (it builds Consul v%s into %s), or set NULLNET_CONSUL_BIN", Version, p)
}

// Server is a running Consul dev agent.
type Server struct {
	HTTPAddr string // host:port of the HTTP API
	DNSPort  int
	DataDir  string
	// ManagementToken is set when the agent runs with ACLs (Options.ACL).
	ManagementToken string
	cmd             *exec.Cmd
	out             *syncBuffer
	done            chan struct{}
	stopOnce        sync.Once
}

// Options tweak the agent.
type Options struct {
	// ExtraHCL is written to a config file the agent reads (e.g. ACL settings).
	ExtraHCL string
	// HTTPPort fixes the HTTP port (0 = a free one). Restarting on the same port needs it.
	HTTPPort int
	// DataDir is reused when set (for restarts); otherwise a temp dir.
	DataDir string
	// Persistent runs a single-node server (-server -bootstrap-expect=1) instead of -dev: dev
	// mode keeps the catalog in memory even with a data dir, so only a persistent agent keeps
	// its catalog across a restart, as a production Consul does.
	Persistent bool
	// ACL turns Consul's ACLs on with default_policy "deny", as a production cluster runs
	// them; Server.ManagementToken then holds the initial management token (also the agent's).
	ACL bool
}

// ManagementToken is the initial management token of an agent started with Options.ACL.
const ManagementToken = "6b1e9c1e-0000-4000-8000-00000000a11c"

// aclHCL is the configuration Options.ACL adds.
var aclHCL = fmt.Sprintf(`
acl {
  enabled        = true
  default_policy = "deny"
  tokens {
    initial_management = %q
    agent              = %q
  }
}
`, ManagementToken, ManagementToken)

// Start runs `consul agent -dev` on free ports and waits until it has a leader. It is stopped at
// the end of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	s, err := Launch(Binary(t), o, t.TempDir())
	if err != nil {
		t.Fatalf("consultest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Launch starts an agent without a testing.T (benchmarks, tools). Call Stop when done.
// Free ports are picked by binding TCP and releasing, so another process on a busy machine can
// take one (or its UDP twin, which serf also needs) before Consul binds it: such a start is
// retried on fresh ports.
func Launch(bin string, o Options, tmp string) (*Server, error) {
	for attempt := 1; ; attempt++ {
		s, err := launch(bin, o, tmp)
		if err == nil || attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			return s, err
		}
	}
}

func launch(bin string, o Options, tmp string) (*Server, error) {
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	if o.HTTPPort != 0 {
		ports[0] = o.HTTPPort
	}
	dataDir := o.DataDir
	if dataDir == "" {
		dataDir = filepath.Join(tmp, "consul-data")
	}
	cfgFile := filepath.Join(tmp, "consul-extra.hcl")
	hcl := fmt.Sprintf(`ports { http = %d  dns = %d  serf_lan = %d  serf_wan = %d  server = %d  grpc = %d  grpc_tls = -1 }
`, ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]) + o.ExtraHCL
	if o.ACL {
		hcl += aclHCL
	}
	if err := os.WriteFile(cfgFile, []byte(hcl), 0o600); err != nil {
		return nil, err
	}
	mode := []string{"-dev"}
	if o.Persistent {
		mode = []string{"-server", "-bootstrap-expect=1"}
	}
	args := append([]string{"agent"}, mode...)
	args = append(args, "-bind=127.0.0.1", "-client=127.0.0.1", "-node=consultest",
		"-log-level=warn", "-config-file="+cfgFile)
	// Only a Persistent agent keeps its catalog across restarts: dev mode keeps raft in memory.
	args = append(args, "-data-dir="+dataDir)
	cmd := exec.Command(bin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s := &Server{HTTPAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), DNSPort: ports[1], DataDir: dataDir,
		cmd: cmd, out: out, done: make(chan struct{})}
	if o.ACL {
		s.ManagementToken = ManagementToken
	}
	go func() { _ = cmd.Wait(); close(s.done) }()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\nconsul output:\n%s", err, out.String())
	}
	return s, nil
}

// Client returns an API client for the agent.
func (s *Server) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := api.NewClient(s.Config())
	if err != nil {
		t.Fatalf("consultest: client: %v", err)
	}
	return c
}

// Config is an API config pointing at the agent (with the management token under ACLs).
func (s *Server) Config() *api.Config {
	c := api.DefaultConfig()
	c.Address = s.HTTPAddr
	c.Token = s.ManagementToken
	return c
}

// PID is the agent's process id (to read its CPU time).
func (s *Server) PID() int { return s.cmd.Process.Pid }

func (s *Server) waitReady(d time.Duration) error {
	c, err := api.NewClient(s.Config())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("consul exited early")
		default:
		}
		if leader, err := c.Status().Leader(); err == nil && leader != "" {
			if _, _, err := c.Catalog().Nodes(nil); err == nil {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("consul at %s not ready after %s", s.HTTPAddr, d)
}

// Stop ends the agent (SIGTERM, then SIGKILL after 3 s).
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	})
}

// Output is what the agent printed so far.
func (s *Server) Output() string { return s.out.String() }

// freePorts picks n ports free for both TCP and UDP on 127.0.0.1: Consul's serf and DNS ports
// listen on both, and a port whose UDP side is taken (a relay holding thousands of UDP sockets,
// say) would stop the agent from starting.
func freePorts(n int) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("no port free for both TCP and UDP after %d tries", tries)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // UDP side taken: keep the TCP listener held so it is not picked again
		}
		held = append(held, u)
		ports = append(ports, port)
	}
	return ports, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 {
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
