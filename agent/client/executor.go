package client

import (
	"context"
	"sync"
)

// executor runs commands with one ordering rule: commands for one net id run one at a time, in
// the order they arrived (a teardown never overtakes the setup before it); commands for
// different net ids run concurrently, at most `parallel` at once (teardowns, when batched, run
// in batches outside that limit: see batch.go). Upstream handled every message
// in its own task, so a teardown could run before its setup.
//
// A net id has a worker goroutine only while it has queued work; the worker exits when its
// queue is empty, so idle net ids cost nothing.
type executor struct {
	ctx  context.Context
	run  func(context.Context, command)
	sem  chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	busy map[uint32][]command // pending commands per net id; present while a worker runs

	batch *teardownBatcher // nil: teardowns run like setups (see enableBatching)
}

func newExecutor(ctx context.Context, parallel int, run func(context.Context, command)) *executor {
	if parallel < 1 {
		parallel = 1
	}
	return &executor{ctx: ctx, run: run, sem: make(chan struct{}, parallel), busy: map[uint32][]command{}}
}

// submit queues cmd behind the commands already queued for its net id.
func (e *executor) submit(cmd command) {
	e.mu.Lock()
	defer e.mu.Unlock()
	q, running := e.busy[cmd.netID]
	e.busy[cmd.netID] = append(q, cmd)
	if !running {
		e.wg.Add(1)
		go e.work(cmd.netID)
	}
}

func (e *executor) work(id uint32) {
	defer e.wg.Done()
	for {
		e.mu.Lock()
		q := e.busy[id]
		if len(q) == 0 || e.ctx.Err() != nil {
			delete(e.busy, id)
			e.mu.Unlock()
			return
		}
		cmd := q[0]
		e.busy[id] = q[1:]
		e.mu.Unlock()

		if cmd.teardown != nil && e.batch != nil {
			e.park(cmd) // outside the slots: setups never wait behind teardowns
			continue
		}

		select {
		case e.sem <- struct{}{}:
		case <-e.ctx.Done():
			continue // drops the rest of the queue at the top of the loop
		}
		e.run(e.ctx, cmd)
		<-e.sem
	}
}

// pending is the number of queued (not yet started) commands.
func (e *executor) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, q := range e.busy {
		n += len(q)
	}
	return n
}

// wait returns once every worker has exited (after ctx ends, or when all queues are empty).
func (e *executor) wait() { e.wg.Wait() }
