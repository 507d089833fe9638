package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeIngress is a small Ingress server: one port table, a Proxy that hands out numbered leases
// for fixed upstreams, and a "restart" that breaks the streams and forgets every lease.
type fakeIngress struct {
	pb.UnimplementedIngressServer
	table *pb.PortMappingBundle
	ups   map[string]netip.AddrPort // service -> upstream

	mu       sync.Mutex
	restart  chan struct{} // closed to break the streams
	calls    []*pb.ProxyRequest
	known    map[string]bool // leases the current "server" knows
	released map[string]int  // ReleaseProxy calls per lease
	seq      int
}

func (f *fakeIngress) WatchPortMappings(_ *pb.WatchPortMappingsRequest, s pb.Ingress_WatchPortMappingsServer) error {
	f.mu.Lock()
	restart := f.restart
	f.mu.Unlock()
	if err := s.Send(f.table); err != nil {
		return err
	}
	select {
	case <-restart:
		return status.Error(codes.Unavailable, "server restarting")
	case <-s.Context().Done():
		return s.Context().Err()
	}
}

func (f *fakeIngress) Proxy(_ context.Context, r *pb.ProxyRequest) (*pb.ProxyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r)
	f.seq++
	id := fmt.Sprintf("lease-%d", f.seq)
	f.known[id] = true
	up := f.ups[r.Service]
	return &pb.ProxyResponse{UpstreamIp: up.Addr().String(), UpstreamPort: uint32(up.Port()), LeaseId: id,
		SessionId: "s-" + r.Service, NetId: 777}, nil
}

func (f *fakeIngress) ReleaseProxy(_ context.Context, r *pb.ReleaseProxyRequest) (*pb.ReleaseProxyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released[r.LeaseId]++
	if !f.known[r.LeaseId] {
		return nil, status.Errorf(codes.NotFound, "unknown lease %q", r.LeaseId)
	}
	delete(f.known, r.LeaseId)
	return &pb.ReleaseProxyResponse{}, nil
}

// restartServer breaks every stream and forgets every lease, as a restarted server would.
func (f *fakeIngress) restartServer() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.restart)
	f.restart = make(chan struct{})
	f.known = map[string]bool{}
}

func (f *fakeIngress) snapshot() (calls []*pb.ProxyRequest, released map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	released = map[string]int{}
	for k, v := range f.released {
		released[k] = v
	}
	return append([]*pb.ProxyRequest(nil), f.calls...), released
}

// After the port-table stream reconnects, every live TCP connection and UDP session is
// re-announced with adopt (its tunnel and upstream), takes the new lease, and its old lease is
// released once (NotFound from a restarted server is fine); the data path never stops.
func TestReannounceAfterStreamReconnect(t *testing.T) {
	tcpUp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcpUp.Close() })
	go func() {
		for {
			c, err := tcpUp.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	udpUp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udpUp.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := udpUp.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = udpUp.WriteTo(buf[:n], a)
		}
	}()

	port := freePort(t)
	f := &fakeIngress{restart: make(chan struct{}), known: map[string]bool{}, released: map[string]int{},
		ups: map[string]netip.AddrPort{"redis": addrOf(t, tcpUp.Addr()), "dns": addrOf(t, udpUp.LocalAddr())},
		table: &pb.PortMappingBundle{Version: 1, Mappings: []*pb.PortMapping{
			{Service: "redis", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: uint32(port), IdleTimeoutSecs: 600},
			{Service: "dns", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: uint32(port), IdleTimeoutSecs: 600},
		}}}
	conn := startIngress(t, f)
	tp := startProxy(t, nil, func(_ *config.Config, c *Config) { c.Conn = conn })
	tp.waitListening(t, TCP, port)
	tp.waitListening(t, UDP, port)

	tc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	echoMsg(t, tc, "tcp-1")
	uc, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	echoMsg(t, uc, "udp-1")
	if calls, _ := f.snapshot(); len(calls) != 2 || calls[0].Adopt != nil || calls[1].Adopt != nil {
		t.Fatalf("calls before the restart: %v", calls)
	}

	f.restartServer()
	waitFor(t, 30*time.Second, "both uses re-announced", func() bool {
		calls, _ := f.snapshot()
		return len(calls) == 4
	})
	calls, _ := f.snapshot()
	for _, c := range calls[2:] {
		up := f.ups[c.Service]
		a := c.GetAdopt()
		if a == nil || a.NetId != 777 || a.UpstreamIp != up.Addr().String() || a.UpstreamPort != uint32(up.Port()) ||
			c.ClientIp != "127.0.0.1" || c.ProxyNode != "proxy-test" {
			t.Fatalf("re-announcement %v, want adopt of net id 777 upstream %s", c, up)
		}
		want := pb.ServiceProtocol_SERVICE_PROTOCOL_TCP
		if c.Service == "dns" {
			want = pb.ServiceProtocol_SERVICE_PROTOCOL_UDP
		}
		if c.Protocol != want {
			t.Fatalf("re-announcement of %s with protocol %v", c.Service, c.Protocol)
		}
	}
	// The old leases are released once each (the restarted server answers NotFound: no retry).
	waitFor(t, 10*time.Second, "old leases released", func() bool {
		_, rel := f.snapshot()
		return rel["lease-1"] == 1 && rel["lease-2"] == 1
	})
	echoMsg(t, tc, "tcp-2")
	echoMsg(t, uc, "udp-2")

	// A new connection of the same client carries the live use's tunnel too: after a restart
	// it may reach the server before the re-announcement does.
	tc2, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	echoMsg(t, tc2, "tcp-new")
	tc2.Close()
	if calls, _ := f.snapshot(); len(calls) != 5 || calls[4].GetAdopt().GetNetId() != 777 || calls[4].Service != "redis" {
		t.Fatalf("new connection's call: %v", calls[len(calls)-1])
	}
	waitFor(t, 10*time.Second, "the new connection's lease released", func() bool {
		_, rel := f.snapshot()
		return rel["lease-5"] == 1
	})

	// Closing the connection releases the lease that now stands for it, and only that one.
	tc.Close()
	newTCP := "lease-3"
	if calls[3].Service == "redis" {
		newTCP = "lease-4"
	}
	waitFor(t, 10*time.Second, "the new tcp lease released", func() bool {
		_, rel := f.snapshot()
		return rel[newTCP] == 1
	})
	time.Sleep(200 * time.Millisecond) // let a wrong second release show up
	_, rel := f.snapshot()
	if rel["lease-1"] != 1 || rel["lease-2"] != 1 || rel[newTCP] != 1 || rel["lease-5"] != 1 || len(rel) != 4 {
		t.Fatalf("releases %v, want lease-1, lease-2, lease-5 and %s once each", rel, newTCP)
	}
	if calls, _ := f.snapshot(); len(calls) != 5 {
		t.Fatalf("%d Proxy calls, want 5", len(calls))
	}
}

func echoMsg(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo of %q: %q %v", msg, buf, err)
	}
}
