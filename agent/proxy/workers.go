package proxy

import (
	"sync"
	"time"
)

// workerIdle is how long a worker goroutine waits for its next task before it exits.
const workerIdle = 10 * time.Second

// workerPool runs a proxied connection's goroutines (its handler, its second copy direction)
// on goroutines that outlive one connection. A new goroutine starts with a small stack and
// grows it through the dial and the splice path, copying it each time; a worker keeps the
// grown stack for the next connection. That growth was about 3% of the proxy's CPU at high
// connection rates. Handing a task to a waiting worker is one channel send; with none waiting,
// run starts a new worker, so tasks never queue behind each other.
type workerPool struct {
	tasks chan func()
	quit  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

func newWorkerPool() *workerPool {
	return &workerPool{tasks: make(chan func()), quit: make(chan struct{})}
}

// run runs f on an idle worker, or on a new one when none is waiting. It never blocks. It must
// not be called after stop.
func (wp *workerPool) run(f func()) {
	select {
	case wp.tasks <- f:
		return
	default:
	}
	wp.wg.Add(1)
	go wp.work(f)
}

func (wp *workerPool) work(f func()) {
	defer wp.wg.Done()
	f()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case f := <-wp.tasks:
			f()
			idle.Reset(workerIdle)
		case <-idle.C:
			return
		case <-wp.quit:
			return
		}
	}
}

// stop ends the idle workers and waits for every worker to finish its task.
func (wp *workerPool) stop() {
	wp.once.Do(func() { close(wp.quit) })
	wp.wg.Wait()
}
