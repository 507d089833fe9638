package command

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/consul/consultest"
)

// agentArgsEnv makes the test binary run the nullnet CLI with these (JSON) arguments instead of
// the tests: the signal tests run a real agent process and signal it.
const agentArgsEnv = "NULLNET_TEST_RUN_CLI"

func TestMain(m *testing.M) {
	if v := os.Getenv(agentArgsEnv); v != "" {
		var args []string
		if err := json.Unmarshal([]byte(v), &args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(Run(args))
	}
	os.Exit(m.Run())
}

// lockedBuffer collects a process's output for the test to read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentProcess is `nullnet agent -dev` with every role against a real Consul, relaying TCP
// port listen to an echo server.
type agentProcess struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	listen int
	exited chan error
}

func startAgentProcess(t *testing.T) *agentProcess {
	t.Helper()
	srv := consultest.Start(t)
	echo, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
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
	listen := freeTCPPort(t)
	stack := fmt.Sprintf("stack \"dev\" {\n  service \"echo.dev\" {\n    protocol = \"tcp\"\n    listen_port = %d\n    timeout = \"30s\"\n  }\n}\n", listen)
	if err := os.WriteFile(filepath.Join(stacks, "dev.hcl"), []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	grpcPort := freeTCPPort(t)
	cfg := fmt.Sprintf(`
node_name = "signal-test"
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
  https_addr = "127.0.0.1:0"
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
`, freeTCPPort(t), grpcPort, srv.HTTPAddr, stacks, freeTCPPort(t), grpcPort, grpcPort, echo.Addr().(*net.TCPAddr).Port)
	cfgFile := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal([]string{"agent", "-dev", "-config-file=" + cfgFile})
	p := &agentProcess{cmd: exec.Command(os.Args[0]), out: &lockedBuffer{}, listen: listen, exited: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), agentArgsEnv+"="+string(args))
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("agent output:\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := p.dial(); err == nil {
			err = roundTrip(c, "ping")
			c.Close()
			if err == nil {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no relayed round trip through the agent's proxy within 60 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (p *agentProcess) dial() (net.Conn, error) {
	return net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.listen), time.Second)
}

func roundTrip(c net.Conn, msg string) error {
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

// exitWithin waits for the process to exit and returns how long it took.
func (p *agentProcess) exitWithin(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case err := <-p.exited:
		p.exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("agent exited with %v", err)
		}
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("agent still running %s after the signal", d)
		return 0
	}
}

// TestAgentSIGTERMDrains: a real agent process holding a relayed TCP connection gets SIGTERM:
// its listener stops accepting but the connection keeps relaying and the process keeps
// running; a second SIGTERM stops it at once (within 2 s) and the connection is cut.
func TestAgentSIGTERMDrains(t *testing.T) {
	p := startAgentProcess(t)
	c, err := p.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, "before"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := p.dial()
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("the proxy still accepts 10 s after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if err := roundTrip(c, "during the drain"); err != nil {
		t.Fatalf("live connection during the drain: %v", err)
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("agent exited during the drain with a connection open: %v", err)
	default:
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took := p.exitWithin(t, 5*time.Second)
	if took > 2*time.Second {
		t.Fatalf("second SIGTERM: stopped after %s, want < 2 s", took)
	}
	t.Logf("second SIGTERM: stopped in %s", took.Round(time.Millisecond))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after the stop")
	}
	if out := p.out.String(); !strings.Contains(out, "caught signal again, stopping now") ||
		!strings.Contains(out, "drain cut short") {
		t.Fatalf("log does not show the second signal cutting the drain")
	}
}

// TestAgentSIGTERMIdle: with nothing open, one SIGTERM stops the agent within the documented
// 2 s, and the releases at stop are not retried.
func TestAgentSIGTERMIdle(t *testing.T) {
	p := startAgentProcess(t)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took := p.exitWithin(t, 10*time.Second)
	t.Logf("SIGTERM with nothing open: stopped in %s", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("stopped after %s, want < 2 s", took)
	}
	if out := p.out.String(); strings.Contains(out, "could not release use") {
		t.Fatalf("a release was retried at stop:\n%s", out)
	}
}
