package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// journal is one ordered record shared by the fake overlay and the test server, so a test can
// assert what happened before what (cleanup before Hello, setup before teardown).
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	j.entries = append(j.entries, s)
	j.mu.Unlock()
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

// fakeOverlay records calls; the protocol tests are about ordering and acks, not the kernel
// (that is agent/overlay's tests and commands_test.go).
type fakeOverlay struct {
	j     *journal
	mu    sync.Mutex
	block map[uint32]chan struct{} // Setup of that net id waits until the channel is closed
	fail  map[uint32]error
	ends  []overlay.End
}

func (f *fakeOverlay) Setup(ctx context.Context, e overlay.End) (overlay.Result, error) {
	f.mu.Lock()
	block, err := f.block[e.NetID], f.fail[e.NetID]
	f.ends = append(f.ends, e)
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.j.add(fmt.Sprintf("setup %d %s", e.NetID, e.Side))
	return overlay.Result{Changed: true, MTU: e.MTU}, err
}

func (f *fakeOverlay) Teardown(ctx context.Context, id uint32, side overlay.Side) error {
	f.j.add(fmt.Sprintf("teardown %d %s", id, side))
	return nil
}

func (f *fakeOverlay) Cleanup(ctx context.Context) ([]string, error) {
	f.j.add("cleanup")
	return nil, nil
}

func (f *fakeOverlay) UnderlayMTU(netip.Addr) int { return 9000 }
func (f *fakeOverlay) InterfaceMTU(string) int    { return 0 }

// testServer is a minimal Control server: it records Hellos and acks and lets the test send
// commands and drop the stream.
type testServer struct {
	pb.UnimplementedControlServer
	j        *journal
	hellos   chan *pb.Hello
	acks     chan *pb.CommandAck
	sessions chan *testSession
}

type testSession struct {
	stream grpc.BidiStreamingServer[pb.NodeMessage, pb.ServerMessage]
	drop   chan struct{}
}

func (s *testServer) ControlChannel(stream grpc.BidiStreamingServer[pb.NodeMessage, pb.ServerMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return errors.New("first message is not a Hello")
	}
	s.j.add("hello")
	s.hellos <- first.GetHello()
	if err := stream.Send(&pb.ServerMessage{Msg: &pb.ServerMessage_Welcome{Welcome: &pb.Welcome{ServerName: "test-server"}}}); err != nil {
		return err
	}
	sess := &testSession{stream: stream, drop: make(chan struct{})}
	s.sessions <- sess
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if a := m.GetAck(); a != nil {
				s.acks <- a
			}
		}
	}()
	select {
	case <-sess.drop:
		return errors.New("dropped by the test")
	case err := <-recvErr:
		return err
	}
}

func setupMsg(id string, net uint32) *pb.ServerMessage {
	return &pb.ServerMessage{Msg: &pb.ServerMessage_OverlaySetup{OverlaySetup: &pb.OverlaySetup{
		CommandId: id, NetId: net, Side: pb.OverlaySide_OVERLAY_SIDE_SERVICE,
		LocalUnderlay: "192.0.2.10", RemoteUnderlay: "192.0.2.20", Service: "redis"}}}
}

func teardownMsg(id string, net uint32) *pb.ServerMessage {
	return &pb.ServerMessage{Msg: &pb.ServerMessage_OverlayTeardown{OverlayTeardown: &pb.OverlayTeardown{
		CommandId: id, NetId: net, Side: pb.OverlaySide_OVERLAY_SIDE_SERVICE}}}
}

func startProtocolTest(t *testing.T, fake Overlay, j *journal) (*testServer, context.CancelFunc, chan error) {
	t.Helper()
	srv := &testServer{j: j, hellos: make(chan *pb.Hello, 10), acks: make(chan *pb.CommandAck, 100), sessions: make(chan *testSession, 10)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterControlServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	cfg := &config.Config{NodeName: "node-1", AdvertiseAddr: "192.0.2.10", Client: config.Client{Enabled: true}}
	c, err := New(Config{Agent: cfg, Conn: conn, Overlay: fake, Logger: hclog.NewNullLogger(), ReconnectMax: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("client did not stop")
		}
	})
	return srv, cancel, done
}

func recv[T any](t *testing.T, ch chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func TestControlChannelHelloOrderingAndAcks(t *testing.T) {
	j := &journal{}
	release101 := make(chan struct{})
	fake := &fakeOverlay{j: j, block: map[uint32]chan struct{}{101: release101},
		fail: map[uint32]error{103: errors.New("create vxlan vx_103_s: file exists (EEXIST)")}}
	srv, _, _ := startProtocolTest(t, fake, j)
	release := sync.OnceFunc(func() { close(release101) })
	t.Cleanup(release) // runs before the client is stopped, also when the test fails early

	hello := recv(t, srv.hellos, "hello")
	if hello.GetNodeName() != "node-1" || hello.GetUnderlayAddr() != "192.0.2.10" || hello.GetUnderlayMtu() != 9000 ||
		strings.Join(hello.GetRoles(), ",") != "client" || hello.GetVersion() == "" || len(hello.GetActiveEnds()) != 0 {
		t.Fatalf("hello = %v", hello)
	}
	if got := j.list(); len(got) < 2 || got[0] != "cleanup" || got[1] != "hello" {
		t.Fatalf("journal %v: start-up cleanup must run before the first Hello", got)
	}
	sess := recv(t, srv.sessions, "session")

	// Net 101's setup is held until the other nets are done: they must not wait behind it,
	// and 101's teardown must wait for its setup.
	for _, m := range []*pb.ServerMessage{setupMsg("a", 101), teardownMsg("b", 101), setupMsg("c", 102), setupMsg("d", 103)} {
		if err := sess.stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	acks := map[string]*pb.CommandAck{}
	for range 2 {
		a := recv(t, srv.acks, "ack of net 102 or 103 while 101 is busy")
		acks[a.GetCommandId()] = a
	}
	if acks["c"] == nil || acks["d"] == nil {
		t.Fatalf("acks while net 101 was busy: %v; want c and d", acks)
	}
	release()
	for _, want := range []string{"a", "b"} {
		a := recv(t, srv.acks, "ack "+want)
		if a.GetCommandId() != want {
			t.Fatalf("ack %q, want %q: commands of one net id must be acked in order", a.GetCommandId(), want)
		}
		acks[want] = a
	}
	if acks["a"].GetError() != "" || acks["a"].GetDurationMicros() == 0 {
		t.Fatalf("ack a = %v; want success with the setup's duration", acks["a"])
	}
	if !strings.Contains(acks["d"].GetError(), "EEXIST") {
		t.Fatalf("ack d = %v; want the setup error", acks["d"])
	}
	var setup101, teardown101 int
	for i, e := range j.list() {
		switch e {
		case "setup 101 service":
			setup101 = i
		case "teardown 101 service":
			teardown101 = i
		}
	}
	if setup101 > teardown101 {
		t.Fatalf("journal %v: teardown ran before setup", j.list())
	}
	fake.mu.Lock()
	for _, e := range fake.ends {
		if e.MTU != 8950 || e.Local.String() != "192.0.2.10" || e.Remote.String() != "192.0.2.20" {
			t.Errorf("end %+v: want MTU from the node's underlay (9000-50) and the command's addresses", e)
		}
	}
	fake.mu.Unlock()
}

func TestControlChannelReconnects(t *testing.T) {
	j := &journal{}
	fake := &fakeOverlay{j: j}
	srv, _, _ := startProtocolTest(t, fake, j)
	recv(t, srv.hellos, "first hello")
	sess := recv(t, srv.sessions, "first session")
	if err := sess.stream.Send(setupMsg("x", 200)); err != nil {
		t.Fatal(err)
	}
	recv(t, srv.acks, "ack of x")

	close(sess.drop) // the server goes away
	hello := recv(t, srv.hellos, "hello after reconnect")
	ends := hello.GetActiveEnds()
	if len(ends) != 1 || ends[0].GetNetId() != 200 || ends[0].GetSide() != pb.OverlaySide_OVERLAY_SIDE_SERVICE {
		t.Fatalf("hello after reconnect lists %v; want the end built before", ends)
	}
	sess = recv(t, srv.sessions, "second session")
	if err := sess.stream.Send(teardownMsg("y", 200)); err != nil {
		t.Fatal(err)
	}
	if a := recv(t, srv.acks, "ack of y"); a.GetCommandId() != "y" || a.GetError() != "" {
		t.Fatalf("ack = %v", a)
	}
	n := 0
	for _, e := range j.list() {
		if e == "cleanup" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("journal %v: start-up cleanup ran %d times, want once per process", j.list(), n)
	}
}

func TestExecuteRejectsBadCommands(t *testing.T) {
	j := &journal{}
	cfg := &config.Config{NodeName: "n", AdvertiseAddr: "192.0.2.10"}
	c, err := New(Config{Agent: cfg, Overlay: &fakeOverlay{j: j}})
	if err != nil {
		t.Fatal(err)
	}
	bad := setupMsg("bad", 101)
	bad.GetOverlaySetup().RemoteUnderlay = "not-an-ip"
	ack, err := c.Execute(context.Background(), bad)
	if err != nil || !strings.Contains(ack.GetError(), "remote_underlay") {
		t.Fatalf("ack %v, %v: want an error naming remote_underlay", ack, err)
	}
	if _, err := c.Execute(context.Background(), &pb.ServerMessage{Msg: &pb.ServerMessage_Welcome{}}); err == nil {
		t.Fatal("Execute of a Welcome: want an error")
	}
	// An empty local_underlay means the node's advertise_addr.
	m := setupMsg("ok", 101)
	m.GetOverlaySetup().LocalUnderlay = ""
	if ack, _ := c.Execute(context.Background(), m); ack.GetError() != "" {
		t.Fatalf("ack %v", ack)
	}
}
