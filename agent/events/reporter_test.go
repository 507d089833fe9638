package events

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// sameProcessServer stands for a server role in the agent's own process: what it is told through
// ReportEvent lands in the same store the reporter writes to.
type sameProcessServer struct {
	pb.UnimplementedControlServer
	store *Store
}

func (s *sameProcessServer) ReportEvent(_ context.Context, e *pb.AgentEvent) (*pb.ReportEventResponse, error) {
	s.store.Emit(FromProto(e))
	return &pb.ReportEventResponse{}, nil
}

// TestReporterSameProcessStoresOnce: in a one-process agent (server, client and proxy, as in
// -dev) the node's connection leads back to its own server. Each event must be stored once, not
// once locally and once more when forwarded.
func TestReporterSameProcessStoresOnce(t *testing.T) {
	store := New(64, hclog.NewNullLogger())
	conn := serveEvents(t, store)

	r := NewReporter("dev", conn, store, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	kinds := []string{ListenerOpened, ControlChannelEstablished, UpstreamLookupFailed}
	for _, k := range kinds {
		r.Emit(Event{Kind: k})
	}
	// Forwarding, when it happened, took a few milliseconds on loopback.
	time.Sleep(500 * time.Millisecond)
	cancel()
	<-done

	got, _ := store.Since(0)
	count := map[string]int{}
	for _, e := range got {
		count[e.Kind]++
		if e.Node != "dev" {
			t.Errorf("event %s node = %q, want dev", e.Kind, e.Node)
		}
	}
	for _, k := range kinds {
		if count[k] != 1 {
			t.Errorf("%s stored %d times, want once (all: %v)", k, count[k], got)
		}
	}
}

// TestReporterForwardsWithoutLocalServer: a node without a server in its process forwards.
func TestReporterForwardsWithoutLocalServer(t *testing.T) {
	remote := New(64, hclog.NewNullLogger())
	conn := serveEvents(t, remote)
	r := NewReporter("node1", conn, nil, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	r.Emit(Event{Kind: ListenerOpened})
	deadline := time.Now().Add(10 * time.Second)
	for remote.Index() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the event never reached the server")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, _ := remote.Since(0); len(got) != 1 || got[0].Node != "node1" {
		t.Fatalf("server stored %v, want one listener_opened from node1", got)
	}
}

// serveEvents runs a real gRPC Control server that stores reported events in store, and
// returns a connection to it; both end with the test.
func serveEvents(t *testing.T, store *Store) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterControlServer(gs, &sameProcessServer{store: store})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
