package ct

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// EventType says whether a flow began or ended.
type EventType uint8

const (
	EventNew EventType = iota + 1
	EventDestroy
)

func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventDestroy:
		return "destroy"
	}
	return fmt.Sprintf("event(%d)", uint8(t))
}

// Event is a new or destroyed conntrack entry with a mark the follower was asked for.
type Event struct {
	Type EventType
	Flow Flow
}

// FollowConfig configures a Follower.
type FollowConfig struct {
	// NetNS is an fd of the network namespace to follow; 0 means the caller's.
	NetNS int
	// Want selects the marks to deliver (the net ids with kernel-path entries). It is called
	// from the follower's goroutine for every event and must be fast and safe for concurrent
	// use. Events of other marks (0: every flow not ours) are discarded.
	Want func(mark uint32) bool
	// Buffer bounds the events waiting for the consumer (default 1024). When it is full, events
	// are dropped and counted: the consumer resynchronises from Table.Marked.
	Buffer int
	// ReadBuffer is the socket's receive buffer in bytes (default 4 MiB). When the kernel cannot
	// queue an event (a burst larger than this), the follower stops with an error wrapping
	// ErrOverflow.
	ReadBuffer int
	Logger     hclog.Logger
}

// ErrOverflow means the kernel dropped events: counts are stale until the consumer resyncs.
var ErrOverflow = errors.New("conntrack events lost: socket receive buffer overflowed")

// Follower delivers new and destroy events of marked flows. Its goroutine stops when ctx ends or
// the socket fails; Events is closed then and Err says why.
type Follower struct {
	log     hclog.Logger
	conn    *conntrack.Conn
	want    func(uint32) bool
	out     chan Event
	dropped atomic.Uint64
	done    chan struct{}
	mu      sync.Mutex
	err     error
}

// Follow subscribes to conntrack's new and destroy events and starts the follower.
func Follow(ctx context.Context, cfg FollowConfig) (*Follower, error) {
	if cfg.Want == nil {
		return nil, errors.New("conntrack follower: no mark filter")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 1024
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 4 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	conn, err := conntrack.Dial(&netlink.Config{NetNS: cfg.NetNS})
	if err != nil {
		return nil, fmt.Errorf("conntrack netlink: %w", err)
	}
	if err := conn.SetReadBuffer(cfg.ReadBuffer); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("conntrack event socket buffer: %w", err)
	}
	in := make(chan conntrack.Event, 64)
	errc, err := conn.Listen(in, 1, []netfilter.NetlinkGroup{netfilter.GroupCTNew, netfilter.GroupCTDestroy})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("conntrack event subscription: %w", err)
	}
	f := &Follower{
		log:  cfg.Logger.Named("conntrack"),
		conn: conn,
		want: cfg.Want,
		out:  make(chan Event, cfg.Buffer),
		done: make(chan struct{}),
	}
	go f.run(ctx, in, errc)
	return f, nil
}

// Events delivers the followed events; it is closed when the follower stops.
func (f *Follower) Events() <-chan Event { return f.out }

// Dropped counts events discarded because Events was full.
func (f *Follower) Dropped() uint64 { return f.dropped.Load() }

// Done is closed when the follower has stopped and released its socket.
func (f *Follower) Done() <-chan struct{} { return f.done }

// Err is why the follower stopped: nil after ctx ended.
func (f *Follower) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *Follower) run(ctx context.Context, in <-chan conntrack.Event, errc <-chan error) {
	defer close(f.done)
	defer close(f.out)
	var stopErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			if isOverflow(err) {
				err = fmt.Errorf("%w: %v", ErrOverflow, err)
			}
			stopErr = err
			break loop
		case ev := <-in:
			f.deliver(ev)
		}
	}
	// Close waits for the library's worker, which may be blocked handing us an event or an
	// error: keep draining both until it has returned.
	closed := make(chan error, 1)
	go func() { closed <- f.conn.Close() }()
	for {
		select {
		case <-in:
		case <-errc:
		case err := <-closed:
			if stopErr == nil && err != nil {
				stopErr = err
			}
			f.mu.Lock()
			f.err = stopErr
			f.mu.Unlock()
			if stopErr != nil {
				f.log.Warn("conntrack follower stopped", "error", stopErr, "dropped", f.dropped.Load())
			}
			return
		}
	}
}

func (f *Follower) deliver(ev conntrack.Event) {
	if ev.Flow == nil || ev.Flow.Mark == 0 || !f.want(ev.Flow.Mark) {
		return
	}
	var typ EventType
	switch ev.Type {
	case conntrack.EventNew:
		typ = EventNew
	case conntrack.EventDestroy:
		typ = EventDestroy
	default:
		return
	}
	select {
	case f.out <- Event{Type: typ, Flow: flowOf(ev.Flow)}:
	default:
		f.dropped.Add(1)
	}
}

func isOverflow(err error) bool {
	var oe *netlink.OpError
	if errors.As(err, &oe) {
		return errors.Is(oe.Err, unix.ENOBUFS)
	}
	return errors.Is(err, unix.ENOBUFS)
}
