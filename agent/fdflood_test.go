package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

// TestFDReserveUnderUDPFlood runs a one-process agent (every role, as `make dev`) in a child
// process whose open-file limit is 4096, and sends it UDP from 5,000 client addresses. The
// relay admits sessions only up to the capped udp_max_sessions, so the process never runs out
// of descriptors: its HTTP API keeps answering, its control channel stays up, and it never
// logs "too many open files". (With the configured 200,000 sessions the flood took every
// descriptor and the API failed with accept4: too many open files.)
func TestFDReserveUnderUDPFlood(t *testing.T) {
	if os.Getenv("NULLNET_FDFLOOD_CONFIG") != "" {
		fdFloodChild(t)
		return
	}
	srv := consultest.Start(t)
	echo, err := net.ListenPacket("udp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()

	dir := t.TempDir()
	listen := freeUDPPort(t)
	cfgFile, httpPort := oneProcessFiles{Node: "fd-test", Consul: srv.HTTPAddr,
		Stack: fmt.Sprintf(`
stack "dev" {
  service "echo.udp" {
    protocol    = "udp"
    listen_port = %d
    timeout     = "2m"
  }
}
`, listen),
		// No admission limits: this test is about descriptors, so every flood client that the
		// budget allows must get a session (the default rates would admit 1,000 a second).
		ProxyExtra: `  udp_new_session_rate            = 0
  udp_new_session_rate_per_prefix = 0`,
		ClientExtra: fmt.Sprintf(`  service "echo.udp" {
    stack          = "dev"
    port           = %d
    protocol       = "udp"
    check_interval = "1s"
  }`, echo.LocalAddr().(*net.UDPAddr).Port)}.write(t, dir)

	logFile := filepath.Join(dir, "child.log")
	cmd := exec.Command(os.Args[0], "-test.run", "^TestFDReserveUnderUDPFlood$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NULLNET_FDFLOOD_CONFIG="+cfgFile, "NULLNET_FDFLOOD_LOG="+logFile)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.Create(filepath.Join(dir, "child.out"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // the child stops its agent and exits
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "child.out"))
			t.Logf("child output:\n%s", b)
		}
	}()

	api := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	self := func() (int, map[string]any) {
		c := &http.Client{Timeout: 3 * time.Second}
		resp, err := c.Get(api + "/v1/agent/self")
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	target := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: listen}
	waitFor(t, "a relayed UDP round trip", 60*time.Second, func() bool {
		c, err := net.DialUDP("udp", nil, target)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = c.Write([]byte("ping"))
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		return err == nil && string(buf[:n]) == "ping"
	})

	// 5,000 client addresses, each its own socket, each one datagram; paced so that the
	// listener's receive buffer does not drop them before they can become sessions.
	const clients = 5000
	socks := make([]*net.UDPConn, 0, clients)
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	for i := 0; i < clients; i++ {
		s, err := net.DialUDP("udp", nil, target)
		if err != nil {
			t.Fatalf("client socket %d: %v", i, err)
		}
		socks = append(socks, s)
	}
	active := func() int {
		_, v := self()
		st, _ := v["status"].(map[string]any)
		proxy, _ := st["proxy"].(map[string]any)
		ls, _ := proxy["listeners"].([]any)
		for _, l := range ls {
			if m, ok := l.(map[string]any); ok && m["protocol"] == "udp" {
				n, _ := m["active"].(float64)
				return int(n)
			}
		}
		return 0
	}
	// Datagrams the kernel drops from a full receive buffer make no session: a client whose
	// first datagram was lost sends again, as a real one would, until the cap is reached.
	for round := 0; round < 5 && active() < 4096-512-512; round++ {
		for i, s := range socks {
			_, _ = s.Write([]byte("flood"))
			if i%100 == 99 {
				time.Sleep(20 * time.Millisecond)
				if code, _ := self(); code != 200 {
					t.Fatalf("the HTTP API failed after %d flood clients: status %d", i+1, code)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}

	code, v := self()
	if code != 200 {
		t.Fatalf("the HTTP API failed after the flood: %d", code)
	}
	st, _ := v["status"].(map[string]any)
	limits, _ := st["limits"].(map[string]any)
	capped := int(limits["udp_max_sessions"].(float64))
	if capped != 4096-512-512 {
		t.Fatalf("udp_max_sessions %d under a limit of 4096, want %d", capped, 4096-512-512)
	}
	client, _ := st["client"].(map[string]any)
	if client["connected"] != true {
		t.Fatalf("the control channel dropped during the flood: %v", client)
	}
	sessions := active()
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	t.Logf("flood of %d clients: %d UDP sessions (cap %d), child holds %d descriptors of 4096", clients, sessions, capped, len(fds))
	if sessions != capped {
		t.Fatalf("%d UDP sessions, want the cap %d to have been reached and held", sessions, capped)
	}
	if len(fds) >= 4096-256 {
		t.Fatalf("the child holds %d descriptors: too close to its limit of 4096", len(fds))
	}
	// A fresh API connection and a fresh relay round trip still work.
	if code, _ := self(); code != 200 {
		t.Fatalf("a fresh API connection failed: %d", code)
	}
	b, _ := os.ReadFile(logFile)
	if strings.Contains(string(b), "too many open files") {
		t.Fatalf("the child ran out of descriptors:\n%s", grepLines(string(b), "too many open files"))
	}
	if !strings.Contains(string(b), "udp_session_limit_reached") {
		t.Fatalf("no udp_session_limit_reached event: the cap was not what stopped the flood")
	}
}

// fdFloodChild runs the agent under an open-file limit of 4096 until its stdin closes.
func fdFloodChild(t *testing.T) {
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 4096, Max: 4096}); err != nil {
		t.Fatalf("lowering the open-file limit: %v", err)
	}
	res := config.Load([]config.Source{{Path: os.Getenv("NULLNET_FDFLOOD_CONFIG")}}, true)
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	logOut, err := os.Create(os.Getenv("NULLNET_FDFLOOD_LOG"))
	if err != nil {
		t.Fatal(err)
	}
	defer logOut.Close()
	a, err := New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "fd", Level: hclog.Warn, Output: logOut}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// freeUDPPort returns a port free for both TCP and UDP on every address.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	for {
		p := freePort(t)
		if c, err := net.ListenPacket("udp", fmt.Sprintf("0.0.0.0:%d", p)); err == nil {
			c.Close()
			return p
		}
	}
}
