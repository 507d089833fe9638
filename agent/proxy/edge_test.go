package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/protobuf/proto"
)

// recordingResolver notes the client address of every Proxy call.
type recordingResolver struct {
	*testResolver
	mu      sync.Mutex
	clients map[netip.Addr]int
}

func newRecordingResolver() *recordingResolver {
	return &recordingResolver{testResolver: newTestResolver(), clients: map[netip.Addr]int{}}
}

func (r *recordingResolver) Resolve(ctx context.Context, client netip.Addr, service string, p Protocol) (Lease, error) {
	r.mu.Lock()
	r.clients[client]++
	r.mu.Unlock()
	return r.testResolver.Resolve(ctx, client, service, p)
}

func (r *recordingResolver) calls(client string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clients[netip.MustParseAddr(client)]
}

// bundle builds a port table as a server would push it: one mapping per entry, with policy.
func bundle(version uint64, ms ...*pb.PortMapping) *pb.PortMappingBundle {
	b := &pb.PortMappingBundle{Version: version}
	for _, m := range ms {
		if m.GetListenPort() == 0 {
			b.HttpServices = append(b.HttpServices, m)
		} else {
			b.Mappings = append(b.Mappings, m)
		}
	}
	return b
}

func tcpMapping(service string, port uint16, pol *pb.ServicePolicy) *pb.PortMapping {
	return &pb.PortMapping{Service: service, Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: uint32(port), Policy: pol}
}

func udpMapping(service string, port uint16, pol *pb.ServicePolicy) *pb.PortMapping {
	return &pb.PortMapping{Service: service, Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: uint32(port),
		IdleTimeoutSecs: 30, Policy: pol}
}

// dialFrom connects from a given local address (127.0.0.x: every loopback address is a client
// of its own).
func dialFrom(t *testing.T, local, remote string) (*net.TCPConn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(local), 0))}
	c, err := d.Dial("tcp", remote)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), nil
}

// tcpOutcome is what a client sees: "served" (its message echoed), "reset" (RST) or another
// error.
func tcpOutcome(t *testing.T, local, remote string) string {
	t.Helper()
	c, err := dialFrom(t, local, remote)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) { // the reset came before connect returned
			return "reset"
		}
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return "reset"
		}
		return "write: " + err.Error()
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return "reset"
		}
		return "read: " + err.Error()
	}
	return "served"
}

func (tp *testProxy) eventCount(kind string) int {
	evs, _ := tp.events.Since(0)
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// TestPolicyTCP: allow/deny from distinct client addresses, refused clients reset without a
// Proxy call; a live policy change applies without reopening the listener; per-client limits
// and max_sessions reset the excess of one client while another keeps being served.
func TestPolicyTCP(t *testing.T) {
	res := newRecordingResolver()
	up := tcpUpstream(t, echo)
	res.set("db", addrOf(t, up.Addr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tp.applyBundle(bundle(1, tcpMapping("db", port, &pb.ServicePolicy{Allow: []string{"127.0.0.0/30"}, Deny: []string{"127.0.0.3/32"}})))
	tp.waitListening(t, TCP, port)
	before, _ := tp.listener(TCP, port)

	for _, tc := range []struct{ client, want string }{
		{"127.0.0.2", "served"}, {"127.0.0.3", "reset"}, {"127.0.0.9", "reset"},
	} {
		if got := tcpOutcome(t, tc.client, addr); got != tc.want {
			t.Errorf("client %s: %s, want %s", tc.client, got, tc.want)
		}
	}
	if n := res.calls("127.0.0.3") + res.calls("127.0.0.9"); n != 0 {
		t.Errorf("refused clients caused %d Proxy calls", n)
	}
	if n := tp.eventCount(events.ClientRefused); n != 2 {
		t.Errorf("%d client_refused events, want 2", n)
	}
	if tcpOutcome(t, "127.0.0.3", addr); tp.eventCount(events.ClientRefused) != 2 {
		t.Error("a second refusal of the same client within a minute made an event")
	}

	// Live change: now only 127.0.0.9; the listener is the same.
	tp.applyBundle(bundle(2, tcpMapping("db", port, &pb.ServicePolicy{Allow: []string{"127.0.0.9"}})))
	if got := tcpOutcome(t, "127.0.0.9", addr); got != "served" {
		t.Errorf("after the change 127.0.0.9: %s", got)
	}
	if got := tcpOutcome(t, "127.0.0.2", addr); got != "reset" {
		t.Errorf("after the change 127.0.0.2: %s", got)
	}
	if after, _ := tp.listener(TCP, port); after.Since != before.Since || after.State != "listening" {
		t.Errorf("listener reopened by a policy change: %+v → %+v", before, after)
	}

	// Per-client open connections: the third of client A is reset, B is served.
	tp.applyBundle(bundle(3, tcpMapping("db", port, &pb.ServicePolicy{MaxConnectionsPerClient: 2, MaxSessions: 4})))
	var held []*net.TCPConn
	for range 2 {
		c, err := dialFrom(t, "127.0.0.5", addr)
		if err != nil {
			t.Fatal(err)
		}
		roundTripTCP(t, c, "hold")
		held = append(held, c)
	}
	if got := tcpOutcome(t, "127.0.0.5", addr); got != "reset" {
		t.Errorf("third connection of one client: %s", got)
	}
	if got := tcpOutcome(t, "127.0.0.6", addr); got != "served" {
		t.Errorf("another client while the first is at its limit: %s", got)
	}
	waitFor(t, 10*time.Second, "B's connection released", func() bool {
		return tp.edge.Load().lookup("db").Sessions() == 2
	})
	// max_sessions (4): two held by A, two more held by B, a fifth from C is reset.
	for range 2 {
		c, err := dialFrom(t, "127.0.0.6", addr)
		if err != nil {
			t.Fatal(err)
		}
		roundTripTCP(t, c, "hold")
		held = append(held, c)
	}
	if got := tcpOutcome(t, "127.0.0.7", addr); got != "reset" {
		t.Errorf("beyond max_sessions: %s", got)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, 10*time.Second, "sessions released", func() bool {
		return tp.edge.Load().lookup("db").Sessions() == 0
	})
	if got := tcpOutcome(t, "127.0.0.7", addr); got != "served" {
		t.Errorf("after the others closed: %s", got)
	}

	// Rate: a burst of 30 from A gets 5 through (burst 5) and resets the rest; B is served
	// meanwhile.
	tp.applyBundle(bundle(4, tcpMapping("db", port, &pb.ServicePolicy{NewConnectionsPerClientRate: 0.5, NewConnectionsPerClientBurst: 5})))
	outcomes := map[string]int{}
	for range 30 {
		outcomes[tcpOutcome(t, "127.0.0.10", addr)]++
	}
	if outcomes["served"] != 5 || outcomes["reset"] != 25 {
		t.Errorf("burst of 30 from one client: %v, want 5 served and 25 reset", outcomes)
	}
	if got := tcpOutcome(t, "127.0.0.11", addr); got != "served" {
		t.Errorf("another client during the burst: %s", got)
	}
	// Counted per service and reason.
	s := tp.edge.Load().lookup("db")
	if r := s.Refused(); r[edgepolicy.ClientRate] != 25 {
		t.Errorf("refused by rate: %v", r)
	}
	// Policy removed: everyone in.
	tp.applyBundle(bundle(5, tcpMapping("db", port, nil)))
	if got := tcpOutcome(t, "127.0.0.10", addr); got != "served" {
		t.Errorf("after the policy was removed: %s", got)
	}
	res.checkNoDoubleRelease(t)
}

// TestPolicyUDP: a denied client's datagrams are dropped before any Proxy call; a client over
// max_connections_per_client (sessions from several source ports) is dropped while another
// client keeps being served; max_sessions bounds the service's sessions.
func TestPolicyUDP(t *testing.T) {
	res := newRecordingResolver()
	up := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("dns", addrOf(t, up.LocalAddr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.applyBundle(bundle(1, udpMapping("dns", port, &pb.ServicePolicy{Deny: []string{"127.0.0.3"}, MaxConnectionsPerClient: 1, MaxSessions: 3})))
	tp.waitListening(t, UDP, port)

	if err := exchange(udpClient(t, "127.0.0.2:0", port), []byte("a"), 3); err != nil {
		t.Fatalf("allowed client: %v", err)
	}
	if err := exchange(udpClient(t, "127.0.0.3:0", port), []byte("b"), 1); err == nil {
		t.Error("denied client served")
	}
	if n := res.calls("127.0.0.3"); n != 0 {
		t.Errorf("denied client caused %d Proxy calls", n)
	}
	// A second source port of 127.0.0.2 is a second session: over its limit of 1.
	if err := exchange(udpClient(t, "127.0.0.2:0", port), []byte("c"), 1); err == nil {
		t.Error("second session of one client served beyond max_connections_per_client = 1")
	}
	if err := exchange(udpClient(t, "127.0.0.4:0", port), []byte("d"), 3); err != nil {
		t.Errorf("another client: %v", err)
	}
	if err := exchange(udpClient(t, "127.0.0.5:0", port), []byte("e"), 3); err != nil {
		t.Errorf("third client: %v", err)
	}
	// Three sessions: a fourth client is over max_sessions.
	if err := exchange(udpClient(t, "127.0.0.6:0", port), []byte("f"), 1); err == nil {
		t.Error("fourth session served beyond max_sessions = 3")
	}
	if got := tp.udpListener(port).drops[dropPolicy].Load(); got < 3 {
		t.Errorf("policy drops = %d, want at least 3", got)
	}
	r := tp.edge.Load().lookup("dns").Refused()
	if r[edgepolicy.Denied] == 0 || r[edgepolicy.ClientConnections] == 0 || r[edgepolicy.ServiceSessions] == 0 {
		t.Errorf("refusals by reason: %v", r)
	}
	// A burst of 8 new sessions (source ports) from one client at a bucket of 3: 3 served, 5
	// dropped; another client is served meanwhile.
	tp.applyBundle(bundle(2, udpMapping("dns", port, &pb.ServicePolicy{NewConnectionsPerClientRate: 0.1, NewConnectionsPerClientBurst: 3})))
	var burst []*net.UDPConn
	for i := range 8 {
		c := udpClient(t, "127.0.0.7:0", port)
		if _, err := c.Write([]byte(fmt.Sprint("burst ", i))); err != nil {
			t.Fatal(err)
		}
		burst = append(burst, c)
	}
	if err := exchange(udpClient(t, "127.0.0.8:0", port), []byte("h"), 3); err != nil {
		t.Errorf("another client during the burst: %v", err)
	}
	answered := 0
	deadline := time.Now().Add(2 * time.Second)
	for _, c := range burst {
		_ = c.SetReadDeadline(deadline)
		if _, err := c.Read(make([]byte, 64)); err == nil {
			answered++
		}
	}
	if answered != 3 {
		t.Errorf("burst of 8 sessions at burst 3: %d answered", answered)
	}
	// Live change to allow-all: the fourth client gets in (the listener stays).
	tp.applyBundle(bundle(3, udpMapping("dns", port, nil)))
	if err := exchange(udpClient(t, "127.0.0.6:0", port), []byte("g"), 3); err != nil {
		t.Errorf("after the policy was removed: %v", err)
	}
}

// TestPolicyHTTP: per request, with curl from distinct source addresses: a denied client gets
// 403, a client over its rate 429 while another client gets 200; no Proxy call for either.
func TestPolicyHTTP(t *testing.T) {
	addr, hits := startHeaderEchoWith(t, func(tp *testProxy) {
		tp.applyBundle(bundle(1, &pb.PortMapping{Service: "web", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP,
			Policy: &pb.ServicePolicy{Deny: []string{"127.0.0.3"}, NewConnectionsPerClientRate: 0.1, NewConnectionsPerClientBurst: 3}}))
	})
	url := "http://" + addr + "/"
	if code, _ := curl(t, url, "-H", "Host: web", "--interface", "127.0.0.3"); code != 403 {
		t.Errorf("denied client: %d, want 403", code)
	}
	codes := map[int]int{}
	for range 5 {
		code, _ := curl(t, url, "-H", "Host: web", "--interface", "127.0.0.2")
		codes[code]++
	}
	if codes[200] != 3 || codes[429] != 2 {
		t.Errorf("5 requests at burst 3: %v", codes)
	}
	if code, body := curl(t, url, "-H", "Host: web", "--interface", "127.0.0.4"); code != 200 || !strings.Contains(body, "127.0.0.4") {
		t.Errorf("another client: %d %s", code, body)
	}
	if n := hits.Load(); n != 4 {
		t.Errorf("upstream saw %d requests, want 4", n)
	}
}

// startHeaderEchoWith is startHeaderEcho with a hook to push a table before requests start.
func startHeaderEchoWith(t *testing.T, setup func(*testProxy)) (string, *atomic.Int64) {
	t.Helper()
	upAddr, hits := headerEchoUpstream(t)
	res := newTestResolver()
	res.set("web", netip.MustParseAddrPort(upAddr))
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.DisableHTTP = false })
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	setup(tp)
	return tp.http.Addr(), hits
}

// headerEchoUpstream answers every request with its headers as JSON and counts them.
func headerEchoUpstream(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	hits := new(atomic.Int64)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(upstream.Close)
	return strings.TrimPrefix(upstream.URL, "http://"), hits
}

// FuzzServicePolicy: whatever policy a server pushes (decoded from arbitrary protobuf bytes),
// the proxy compiles it or refuses it without panicking, and admitting and releasing clients
// under it keeps the session count exact.
func FuzzServicePolicy(f *testing.F) {
	for _, sp := range []*pb.ServicePolicy{
		{Allow: []string{"10.0.0.0/8", "2001:db8::/32"}, Deny: []string{"10.0.0.1/32"}},
		{MaxConnectionsPerClient: 1, MaxSessions: 2, NewConnectionsPerClientRate: 0.5, NewConnectionsPerClientBurst: 1},
		{Allow: []string{"bogus"}}, {NewConnectionsPerClientRate: -1}, {MaxSessions: 1 << 31},
	} {
		b, _ := proto.Marshal(sp)
		f.Add(b, []byte{10, 0, 0, 1})
	}
	f.Fuzz(func(t *testing.T, raw, addr []byte) {
		var sp pb.ServicePolicy
		if proto.Unmarshal(raw, &sp) != nil {
			return
		}
		rules, err := edgepolicy.Compile(specOf(&sp))
		if err != nil {
			return
		}
		s := edgepolicy.NewService()
		s.SetRules(rules)
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			a = netip.MustParseAddr("192.0.2.1")
		}
		var tickets []edgepolicy.Ticket
		for i := range 5 {
			tk, _ := s.Admit(a, int64(i))
			tickets = append(tickets, tk)
		}
		for _, tk := range tickets {
			tk.Release()
		}
		if n := s.Sessions(); n != 0 {
			t.Fatalf("%d sessions after every ticket was released", n)
		}
	})
}

// TestPolicyTLSPassthrough: two tls services share a port; the policy of the service the
// ClientHello names applies (openssl s_client): one admits the client, the other denies it, and
// the denied connection never reaches a backend nor makes a Proxy call.
func TestPolicyTLSPassthrough(t *testing.T) {
	res := newRecordingResolver()
	a, b := startTLSBackend(t, "a.example"), startTLSBackend(t, "b.example")
	res.set("a.example", netip.AddrPortFrom(loopback, uint16(a.port())))
	res.set("b.example", netip.AddrPortFrom(loopback, uint16(b.port())))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tlsMapping := func(name string, pol *pb.ServicePolicy) *pb.PortMapping {
		return &pb.PortMapping{Service: name, Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TLS, ListenPort: uint32(port),
			IdleTimeoutSecs: 60, Stack: "edge", Policy: pol}
	}
	tp.applyBundle(bundle(1, tlsMapping("a.example", &pb.ServicePolicy{Allow: []string{"127.0.0.0/8"}}),
		tlsMapping("b.example", &pb.ServicePolicy{Deny: []string{"127.0.0.1"}})))
	tp.waitListening(t, TLS, port)
	if out := sClient(t, port, "a.example", "nullnet-test", "ping\n"); !strings.Contains(out, "backend=a.example") {
		t.Errorf("allowed service: %s", out)
	}
	if out := sClient(t, port, "b.example", "nullnet-test", "ping\n"); strings.Contains(out, "backend=") {
		t.Errorf("denied service reached its backend: %s", out)
	}
	if len(b.handshakes()) != 0 || res.calls("127.0.0.1") != 1 {
		t.Errorf("denied client: backend handshakes %v, Proxy calls %d (want 1, for a.example)", b.handshakes(), res.calls("127.0.0.1"))
	}
	if r := tp.edge.Load().lookup("b.example").Refused(); r[edgepolicy.Denied] != 1 {
		t.Errorf("refusals of b.example: %v", r)
	}
}
