package containers

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/moby/moby/client"
	"github.com/nullnet/nullnet/agent/containers/containertest"
)

// socketRelay forwards a unix socket of its own to the Docker Engine's socket; cut closes
// every open connection, as a restarting dockerd does.
type socketRelay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newSocketRelay(t *testing.T, target string) (*socketRelay, string) {
	path := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	r := &socketRelay{ln: ln}
	t.Cleanup(func() { ln.Close(); r.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return r, path
}

func (r *socketRelay) cut() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.conns)
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
	return n
}

// TestWatcherReconnects cuts the engine connection under a running watcher: it reconnects,
// relists, and follows containers started after the cut.
func TestWatcherReconnects(t *testing.T) {
	env := containertest.New(t)
	relay, sock := newSocketRelay(t, "/var/run/docker.sock")
	docker, err := client.New(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Docker: docker, Logger: hclog.New(&hclog.LoggerOptions{Name: "containers", Output: testLog{t}})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); w.Run(ctx) }()
	defer func() { cancel(); <-stopped }() // no logging after the test ends

	svc := "rc-" + env.Run
	first, _ := env.Start("rc1", "nullnet.service="+svc, "nullnet.port=7000")
	waitReplica(t, w, first, StateRunning)
	if n := relay.cut(); n == 0 {
		t.Fatal("no engine connection to cut")
	}
	second, _ := env.Start("rc2", "nullnet.service="+svc, "nullnet.port=7000")
	waitReplica(t, w, second, StateRunning) // seen by the relist after reconnecting, or its events
	env.Docker("pause", first)
	waitReplica(t, w, first, StatePaused) // events flow again on the new stream
	env.Docker("unpause", first)
}

func waitReplica(t *testing.T, w *Watcher, name string, state State) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range w.Replicas() {
			if r.Name == name && r.State == state {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("replica %s never reached state %s; have %+v", name, state, w.Replicas())
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) { l.t.Log(string(p)); return len(p), nil }
