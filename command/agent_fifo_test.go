package command

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

// A FIFO named *.hcl in stacks_dir used to wedge the agent: SIGHUP read it with os.ReadFile on
// the signal-handling goroutine, so SIGTERM was never handled. Now the reload is rejected with a
// clear error and SIGTERM still stops the agent. The signals are real, sent to this process
// while the agent command has them registered.
func TestAgentFIFOInStacksDirSIGHUPThenSIGTERM(t *testing.T) {
	srv := consultest.Start(t)
	dir := t.TempDir()
	stacks := filepath.Join(dir, "stacks")
	os.Mkdir(stacks, 0o755)
	os.WriteFile(filepath.Join(stacks, "demo.hcl"), []byte(strings.Replace(demoStack, "9000", fmt.Sprint(freeTCPPort(t)), 1)), 0o644)
	httpPort, grpcPort := freeTCPPort(t), freeTCPPort(t)
	cfg := filepath.Join(dir, "server.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
node_name = "fifo-test"
bind_addr = "127.0.0.1"
advertise_addr = "127.0.0.1"
ports {
  http = %d
  grpc = %d
}
consul {
  address = %q
}
server {
  enabled    = true
  stacks_dir = %q
}
`, httpPort, grpcPort, srv.HTTPAddr, stacks)), 0o644)

	ui := cli.NewMockUi()
	code := make(chan int, 1)
	go func() { code <- (&AgentCommand{UI: ui}).Run([]string{"-config-file=" + cfg, "-log-level=warn"}) }()
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	waitHTTP := func(what, path, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(httpGet(base+path), want) {
			select {
			case c := <-code:
				t.Fatalf("agent exited with %d:\n%s", c, ui.ErrorWriter)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s never showed %q", what, path, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitHTTP("start", "/v1/stacks", `"echo.tcp"`)

	if err := syscall.Mkfifo(filepath.Join(stacks, "pipe.hcl"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitHTTP("the rejected reload", "/v1/events?kind=config_reload_rejected", "named pipe")

	start := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("agent exited with %d:\n%s", c, ui.ErrorWriter)
		}
		t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not stop the agent within 10 s")
	}
}
