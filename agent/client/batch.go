package client

import (
	"context"
	"strconv"
	"time"

	"github.com/nullnet/nullnet/agent/overlay"
)

// Teardowns are batched. Deleting a tunnel end costs the kernel tens of milliseconds (RTNL hold
// plus RCU grace periods) whatever else is deleted with it, and deletes requested one at a time
// are paid one at a time: under churn the node's teardowns queue behind each other. So the
// executor hands teardowns to one batcher, which removes all that are waiting with one kernel
// request (overlay.Manager.TeardownBatch) and acks each command with its own result.
//
// Ordering is kept: a teardown's worker waits for its batch to finish before the net id's next
// command runs. Teardowns do not take the executor's slots, so setups never queue behind them.

const (
	// batchLinger bounds how long a batch waits for more teardowns; it is cut short as soon as
	// every net id the executor is working on is parked in the batch, so a lone teardown does
	// not wait at all.
	batchLinger = 2 * time.Millisecond
	// batchMax bounds one batch; more waiting teardowns go into the next one.
	batchMax = 16
)

// batchTeardowner is an Overlay that can remove several ends with one request
// (overlay.Manager). Overlays without it get one Teardown per command.
type batchTeardowner interface {
	TeardownBatch(ctx context.Context, ends []overlay.EndRef) []error
}

// batchItem is one parked teardown; done closes when its ack has been produced.
type batchItem struct {
	cmd  command
	done chan struct{}
}

// teardownBatcher collects parked teardowns and runs them in batches on its own goroutine,
// owned by the executor (started by enableBatching, stopped by the executor's context).
type teardownBatcher struct {
	run    func(context.Context, []command)
	linger time.Duration
	max    int

	// queue is guarded by the executor's mu, so the batcher can compare it with the set of
	// busy net ids.
	queue []batchItem
	wake  chan struct{} // capacity 1
}

// enableBatching routes teardowns to run in batches; call it before the first submit.
func (e *executor) enableBatching(linger time.Duration, max int, run func(context.Context, []command)) {
	e.batch = &teardownBatcher{run: run, linger: linger, max: max, wake: make(chan struct{}, 1)}
	e.wg.Add(1)
	go e.batchLoop()
}

// park queues a teardown for the next batch and waits until it has run (or ctx ends).
func (e *executor) park(cmd command) {
	it := batchItem{cmd: cmd, done: make(chan struct{})}
	e.mu.Lock()
	e.batch.queue = append(e.batch.queue, it)
	e.mu.Unlock()
	select {
	case e.batch.wake <- struct{}{}:
	default:
	}
	select {
	case <-it.done:
	case <-e.ctx.Done():
	}
}

func (e *executor) batchLoop() {
	defer e.wg.Done()
	b := e.batch
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-b.wake:
		}
		// Linger until every busy net id has parked its teardown here (nothing else can join
		// soon), the batch is full, or the window closes.
		timer.Reset(b.linger)
	linger:
		for {
			e.mu.Lock()
			n, busy := len(b.queue), len(e.busy)
			e.mu.Unlock()
			if n == 0 || n >= b.max || n >= busy {
				break
			}
			select {
			case <-e.ctx.Done():
				timer.Stop()
				return
			case <-b.wake:
			case <-timer.C:
				break linger
			}
		}
		timer.Stop()
		for {
			e.mu.Lock()
			items := b.queue[:min(len(b.queue), b.max)]
			b.queue = append([]batchItem(nil), b.queue[len(items):]...)
			e.mu.Unlock()
			if len(items) == 0 || e.ctx.Err() != nil {
				break
			}
			cmds := make([]command, len(items))
			for i, it := range items {
				cmds[i] = it.cmd
			}
			b.run(e.ctx, cmds)
			for _, it := range items {
				close(it.done)
			}
		}
	}
}

// runTeardowns is the batcher's run function: one TeardownBatch for all cmds, then one ack per
// command with that command's own result.
func (c *Client) runTeardowns(ctx context.Context, cmds []command) {
	bt, ok := c.overlay.(batchTeardowner)
	if !ok || len(cmds) == 1 {
		for _, cmd := range cmds {
			c.runCommand(ctx, cmd)
		}
		return
	}
	tctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	start := time.Now()
	// Invalid commands are answered on their own (execute's check) and kept out of the batch.
	valid := cmds[:0:0]
	for _, cmd := range cmds {
		if cmd.validate() != nil {
			c.runCommand(ctx, cmd)
			continue
		}
		valid = append(valid, cmd)
	}
	cmds = valid
	if len(cmds) == 0 {
		return
	}
	refs := make([]overlay.EndRef, len(cmds))
	for i, cmd := range cmds {
		refs[i] = overlay.EndRef{NetID: cmd.netID, Side: cmd.side}
	}
	errs := bt.TeardownBatch(tctx, refs)
	size := strconv.Itoa(len(cmds))
	for i, cmd := range cmds {
		if errs[i] == nil {
			c.forgetEnd(cmd)
		}
		ack := c.finish(cmd, start, []string{"batch_size", size}, errs[i])
		select {
		case c.acks <- ack:
		case <-ctx.Done():
			return
		}
	}
}
