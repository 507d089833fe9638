package client

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestExecutorOrderPerNetIDConcurrentAcross(t *testing.T) {
	var mu sync.Mutex
	var log []string
	running := map[uint32]int{}
	maxSame := 0
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newExecutor(ctx, 4, func(ctx context.Context, c command) {
		mu.Lock()
		running[c.netID]++
		maxSame = max(maxSame, running[c.netID])
		mu.Unlock()
		if c.netID == 1 && c.id == "1a" {
			<-release // net 1's first command blocks until net 2 has finished
		}
		mu.Lock()
		running[c.netID]--
		log = append(log, c.id)
		mu.Unlock()
	})
	for _, c := range []command{{id: "1a", netID: 1}, {id: "1b", netID: 1}, {id: "1c", netID: 1}, {id: "2a", netID: 2}, {id: "2b", netID: 2}} {
		e.submit(c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(log)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("net 2 did not run while net 1 was blocked: %v", log)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	done := make(chan struct{})
	go func() { e.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("workers did not exit after their queues emptied")
	}
	want := []string{"2a", "2b", "1a", "1b", "1c"}
	for i := range want {
		if log[i] != want[i] {
			t.Fatalf("order %v, want %v", log, want)
		}
	}
	if maxSame != 1 {
		t.Fatalf("%d commands of one net id ran at once", maxSame)
	}
	if e.pending() != 0 || len(e.busy) != 0 {
		t.Fatal("idle executor still holds queues")
	}
}

func TestExecutorStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	ran := 0
	e := newExecutor(ctx, 1, func(ctx context.Context, c command) {
		ran++
		close(started)
		<-ctx.Done()
	})
	e.submit(command{id: "a", netID: 1})
	e.submit(command{id: "b", netID: 1})
	<-started
	cancel()
	e.wait()
	if ran != 1 {
		t.Fatalf("ran %d commands; queued commands must be dropped after cancel", ran)
	}
}
