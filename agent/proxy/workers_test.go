package proxy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tasks run at once even when every worker is busy (run never queues a task behind another),
// a finished worker takes the next task instead of a new goroutine starting, and stop waits
// for running tasks and ends the idle workers.
func TestWorkerPool(t *testing.T) {
	wp := newWorkerPool()
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(3)
	for range 3 { // three blocking tasks: each needs a worker of its own
		wp.run(func() { started.Done(); <-release })
	}
	waitDone(t, &started, "three blocked tasks all started")
	close(release)

	// The three workers are idle now; the next task reuses one of them.
	waitFor(t, 2*time.Second, "a worker to go idle", func() bool {
		select {
		case wp.tasks <- func() {}:
			return true
		default:
			return false
		}
	})

	var ran atomic.Int32
	var finished sync.WaitGroup
	finished.Add(1)
	wp.run(func() { defer finished.Done(); time.Sleep(50 * time.Millisecond); ran.Add(1) })
	stopped := make(chan struct{})
	go func() { wp.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return: idle workers kept running")
	}
	if ran.Load() != 1 {
		t.Fatal("stop returned before the running task finished")
	}
	wp.stop() // idempotent
}

func waitDone(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}
