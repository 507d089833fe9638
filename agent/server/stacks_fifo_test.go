package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// A FIFO named *.hcl in stacks_dir (issue 17.3 wedged the agent on it): the watcher's reload and
// a SIGHUP reload both reject the set with a clear error within a bounded time, the server gives
// up the leader lock while its stacks cannot be read (the definitions it mirrored stay), and
// takes it back once the FIFO is gone.
func TestStacks_FIFOIsRejectedAndLeadershipGivenUp(t *testing.T) {
	e := newStackEnv(t, nil, map[string]string{"app.hcl": fmt.Sprintf(appStack, 6379)})
	e.waitCatalog("definitions", func(m map[string]*api.AgentService) bool { return len(m) == 4 })
	e.waitEvent(events.LeadershipAcquired, 0)
	before := e.definitions()

	after := e.events.Index()
	fifo := filepath.Join(e.dir, "pipe.hcl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	ev := e.waitEvent(events.ConfigReloadRejected, after)
	if !strings.Contains(ev.Fields["diagnostics"], "pipe.hcl") || !strings.Contains(ev.Fields["diagnostics"], "named pipe") {
		t.Errorf("rejection does not name the FIFO: %q", ev.Fields["diagnostics"])
	}
	e.waitEvent(events.LeadershipLost, after)
	deadline := time.Now().Add(20 * time.Second)
	for {
		kv, _, err := e.client.KV().Get("nullnet/leader", nil)
		if err == nil && (kv == nil || kv.Session == "") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader lock is still held (%v, %v)", kv, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name := range before {
		if e.definitions()[name] == nil {
			t.Errorf("definition %s removed while the stacks could not be read", name)
		}
	}

	// The SIGHUP path: Reload returns the error, quickly.
	cfg := config.Default()
	cfg.Server.Enabled = true
	cfg.Server.StacksDir = e.dir
	cfg.Server.ReloadDebounce = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- e.srv.Reload(cfg) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "named pipe") {
			t.Errorf("Reload with a FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Reload with a FIFO in stacks_dir did not return within 5 s")
	}

	after = e.events.Index()
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}
	e.waitEvent(events.ConfigReloaded, after)
	e.waitEvent(events.LeadershipAcquired, after)
}
