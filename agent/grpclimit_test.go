package agent

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestGRPCStreamLimits: a server admits at most limits.grpc_max_concurrent_streams streams on
// one connection (further ones wait in the client) and limits.grpc_max_streams_per_client
// calls from one address across its connections (further ones are ResourceExhausted), while
// another address is still served.
func TestGRPCStreamLimits(t *testing.T) {
	srv := consultest.Start(t)
	cfg := testConfig(t, srv.HTTPAddr, "limits {\n  grpc_max_concurrent_streams = 10\n  grpc_max_streams_per_client = 15\n}\n")
	a, err := New(cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: testWriter{t}}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	dial := func(src string) pb.ControlClient {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		cc, err := grpc.NewClient(a.grpcLn.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", addr)
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return pb.NewControlClient(cc)
	}
	// open starts n control channels that never say hello: the server holds each one.
	open := func(c pb.ControlClient, n int) []pb.Control_ControlChannelClient {
		var out []pb.Control_ControlChannelClient
		for i := 0; i < n; i++ {
			s, err := c.ControlChannel(ctx)
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			out = append(out, s)
		}
		return out
	}
	waitCount := func(who string, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for a.streams.count(who) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d calls in flight at the server, want %d", who, a.streams.count(who), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	first := dial("127.0.0.1")
	open(first, 10)
	waitCount("127.0.0.1", 10)
	// The 11th stream on the connection waits for the server's stream quota and never reaches
	// a handler.
	qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if s, err := first.ControlChannel(qctx); err == nil {
		_, err = s.Recv()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("stream 11 on one connection: %v, want it held until its deadline", err)
		}
	} else if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stream 11 on one connection: %v", err)
	}
	qcancel()
	waitCount("127.0.0.1", 10)

	second := open(dial("127.0.0.1"), 10)
	// The refused streams end at once with ResourceExhausted; the admitted ones stay open.
	results := make(chan error, len(second))
	for _, s := range second {
		go func() { _, err := s.Recv(); results <- err }()
	}
	exhausted := 0
	timeout := time.After(10 * time.Second)
	for exhausted < 5 {
		select {
		case err := <-results:
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("a stream of the second connection ended with %v, want ResourceExhausted", err)
			}
			exhausted++
		case <-timeout:
			t.Fatalf("%d streams of the second connection refused, want 5 (15 per address)", exhausted)
		}
	}
	select {
	case err := <-results:
		t.Fatalf("a sixth stream ended: %v; want 10 admitted in all", err)
	case <-time.After(300 * time.Millisecond):
	}
	waitCount("127.0.0.1", 15)

	open(dial("127.0.0.2"), 1)
	waitCount("127.0.0.2", 1)
}
