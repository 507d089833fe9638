package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	pb "github.com/nullnet/nullnet/proto"
)

// waitFor polls cond until it holds or the (generous) deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The executor's batching, with small fakes: teardowns waiting together run as one batch, each
// exactly once; setups run while a batch is in the kernel; per-net-id order holds across the
// batcher (teardown, setup, teardown of one id run in that order).
func TestExecutorBatchesTeardowns(t *testing.T) {
	var mu sync.Mutex
	var log []string
	var batches [][]string
	releaseFirst := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newExecutor(ctx, 2, func(ctx context.Context, c command) {
		mu.Lock()
		log = append(log, c.id)
		mu.Unlock()
	})
	e.enableBatching(20*time.Millisecond, 8, func(ctx context.Context, cmds []command) {
		var ids []string
		for _, c := range cmds {
			ids = append(ids, c.id)
		}
		mu.Lock()
		first := len(batches) == 0
		batches = append(batches, ids)
		mu.Unlock()
		if first {
			<-releaseFirst // the kernel is slow: everything else piles up meanwhile
		}
		mu.Lock()
		log = append(log, ids...)
		mu.Unlock()
	})
	td := func(id string, net uint32) command {
		return command{id: id, netID: net, teardown: &pb.OverlayTeardown{}}
	}
	su := func(id string, net uint32) command { return command{id: id, netID: net, setup: &pb.OverlaySetup{}} }

	e.submit(td("t1", 1))
	waitFor(t, "the first batch to start", func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 1 })
	// While batch 1 is stuck: 20 more teardowns, a setup for net 1 (must wait for t1), a
	// teardown/setup/teardown sequence for net 50, and setups of other nets (must not wait).
	e.submit(su("s1", 1))
	for i := range 20 {
		e.submit(td(fmt.Sprintf("t%d", 100+i), uint32(100+i)))
	}
	e.submit(td("a50", 50))
	e.submit(su("b50", 50))
	e.submit(td("c50", 50))
	for i := range 4 {
		e.submit(su(fmt.Sprintf("s%d", 200+i), uint32(200+i)))
	}
	waitFor(t, "setups of other nets to run while a batch is in the kernel", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, id := range log {
			if id >= "s200" && id <= "s203" {
				n++
			}
		}
		return n == 4
	})
	mu.Lock()
	if slices.Contains(log, "s1") {
		t.Fatal("net 1's setup ran before its teardown finished")
	}
	mu.Unlock()
	close(releaseFirst)
	waitFor(t, "every command to run", func() bool { mu.Lock(); defer mu.Unlock(); return len(log) == 1+1+20+3+4 })
	done := make(chan struct{})
	go func() { cancel(); e.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("executor did not stop")
	}

	seen := map[string]int{}
	for _, id := range log {
		seen[id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s ran %d times", id, n)
		}
	}
	pos := func(id string) int { return slices.Index(log, id) }
	if !(pos("t1") < pos("s1") && pos("a50") < pos("b50") && pos("b50") < pos("c50")) {
		t.Fatalf("per-net-id order broken: %v", log)
	}
	largest := 0
	for _, b := range batches {
		if len(b) > 8 {
			t.Fatalf("batch of %d, limit 8: %v", len(b), b)
		}
		largest = max(largest, len(b))
	}
	if largest < 2 || len(batches) > 1+6 {
		t.Fatalf("teardowns were not batched: %v", batches)
	}
}

func realSetupMsg(id string, net uint32, h *overlaytest.Host) *pb.ServerMessage {
	return &pb.ServerMessage{Msg: &pb.ServerMessage_OverlaySetup{OverlaySetup: &pb.OverlaySetup{
		CommandId: id, NetId: net, Side: pb.OverlaySide_OVERLAY_SIDE_SERVICE,
		LocalUnderlay: h.Underlay.String(), RemoteUnderlay: "192.168.77.200", Service: "svc"}}}
}

// The control channel against a real overlay.Manager in a namespace: many teardowns sent at
// once are batched, every command gets exactly one ack with no error, the devices are gone,
// and a teardown followed by a setup of the same net id leaves that end built.
func TestControlChannelBatchedTeardownsReal(t *testing.T) {
	h := overlaytest.Hosts(t, "nnbt", 1)[0]
	m, err := overlay.New(overlay.Config{NetNS: h.NS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	rec := &batchRecorder{Manager: m}
	srv, _, _ := startProtocolTest(t, rec, &journal{})
	sess := recv(t, srv.sessions, "a control session")
	send := func(msg *pb.ServerMessage) {
		t.Helper()
		if err := sess.stream.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	acks := map[string]*pb.CommandAck{}
	collect := func(n int) {
		t.Helper()
		for range n {
			a := recv(t, srv.acks, "an ack")
			if _, dup := acks[a.GetCommandId()]; dup {
				t.Fatalf("second ack for %s", a.GetCommandId())
			}
			if a.GetError() != "" {
				t.Fatalf("ack %s: %s", a.GetCommandId(), a.GetError())
			}
			acks[a.GetCommandId()] = a
		}
	}

	const n = 40
	for i := range n {
		send(realSetupMsg(fmt.Sprintf("s%d", i), overlay.MinNetID+uint32(i), h))
	}
	collect(n)
	if ends, err := m.Ends(); err != nil || len(ends) != n {
		t.Fatalf("%d ends built (%v), want %d", len(ends), err, n)
	}
	// All teardowns at once; net MinNetID is set up again right behind its teardown.
	for i := range n {
		send(&pb.ServerMessage{Msg: &pb.ServerMessage_OverlayTeardown{OverlayTeardown: &pb.OverlayTeardown{
			CommandId: fmt.Sprintf("t%d", i), NetId: overlay.MinNetID + uint32(i), Side: pb.OverlaySide_OVERLAY_SIDE_SERVICE}}})
	}
	send(realSetupMsg("again", overlay.MinNetID, h))
	collect(n + 1)
	if acks["again"].GetDurationMicros() == 0 {
		t.Fatal("ack without a duration")
	}
	rec.mu.Lock()
	sizes := rec.sizes
	rec.mu.Unlock()
	// A lone teardown goes to Teardown; TeardownBatch sees only batches of two or more.
	if len(sizes) == 0 || sum(sizes) > n {
		t.Fatalf("batch sizes %v: %d teardowns sent at once were not batched", sizes, n)
	}
	ends, err := m.Ends()
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) != 1 || ends[0].NetID != overlay.MinNetID {
		t.Fatalf("ends after the teardowns: %+v, want only net %d (set up after its teardown)", ends, overlay.MinNetID)
	}
	links, err := h.Handle(t).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, l := range links {
		if id, _, ok := overlay.ParseName(l.Attrs().Name); ok && id != overlay.MinNetID {
			left = append(left, l.Attrs().Name)
		}
	}
	if len(left) != 0 {
		t.Fatalf("devices left after the teardowns: %v", left)
	}
}

// batchRecorder is a real overlay.Manager that records the size of every batch.
type batchRecorder struct {
	*overlay.Manager
	mu    sync.Mutex
	sizes []int
}

func (r *batchRecorder) TeardownBatch(ctx context.Context, ends []overlay.EndRef) []error {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(ends))
	r.mu.Unlock()
	return r.Manager.TeardownBatch(ctx, ends)
}

func sum(s []int) int {
	n := 0
	for _, v := range s {
		n += v
	}
	return n
}
