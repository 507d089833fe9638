package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// testReplicaID is the replica id testResolver gives the uses of an upstream.
func testReplicaID(up netip.AddrPort) string { return "node-1/" + up.String() }

// TestUnhealthyReplicaEndsItsUses: a set naming a replica ends the TCP connections and UDP
// sessions relayed to it (within a bound), leaves the uses of other replicas alone, and
// reports one event per replica with the counts; new uses reach the healthy replica.
func TestUnhealthyReplicaEndsItsUses(t *testing.T) {
	res := newTestResolver()
	sick := tcpUpstream(t, echo)
	well := tcpUpstream(t, echo)
	sickUDP := udpUpstream(t, "127.0.0.1:0", udpEcho)
	res.set("db", addrOf(t, sick.Addr()))
	res.set("other", addrOf(t, well.Addr()))
	res.set("dns", addrOf(t, sickUDP.LocalAddr()))
	tp := startProxy(t, res, nil)
	dbPort, otherPort, dnsPort := freePort(t), freePort(t), freePort(t)
	tp.apply(1, Mapping{Protocol: TCP, Port: dbPort, Service: "db"}, Mapping{Protocol: TCP, Port: otherPort, Service: "other"},
		Mapping{Protocol: UDP, Port: dnsPort, Service: "dns"})
	tp.waitListening(t, TCP, dbPort)
	tp.waitListening(t, TCP, otherPort)
	tp.waitListening(t, UDP, dnsPort)

	roundTrip := func(c net.Conn, msg string) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(c, buf)
		return err
	}
	db1, db2, other := dialProxy(t, dbPort), dialProxy(t, dbPort), dialProxy(t, otherPort)
	defer db1.Close()
	defer db2.Close()
	defer other.Close()
	udp := udpClient(t, "", dnsPort)
	for _, c := range []net.Conn{db1, db2, other, udp} {
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatalf("before: %v", err)
		}
	}

	sickID := testReplicaID(addrOf(t, sick.Addr()))
	start := time.Now()
	tp.applyUnhealthy(&pb.UnhealthyReplicas{Version: 2, Replicas: []*pb.UnhealthyReplica{
		{Service: "db", ReplicaId: sickID},
		{Service: "dns", ReplicaId: testReplicaID(addrOf(t, sickUDP.LocalAddr()))},
		{Service: "other", ReplicaId: "node-1/10.9.9.9:1"}, // another replica of other: not ours
		{Service: "Bad Name", ReplicaId: sickID},
	}})
	for _, c := range []*net.TCPConn{db1, db2} {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("connection to the critical replica: read %v, want EOF", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("closing took %v", d)
	}
	if err := roundTrip(other, "still"); err != nil {
		t.Fatalf("a healthy replica's connection was touched: %v", err)
	}
	waitFor(t, 5*time.Second, "udp session ended", func() bool {
		l, _ := tp.listener(UDP, dnsPort)
		return l.Active == 0
	})
	evs, _ := tp.events.Since(0)
	var got []events.Event
	for _, e := range evs {
		if e.Kind == events.ConnectionsClosedUnhealthy {
			got = append(got, e)
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d connections_closed_unhealthy events, want 2 (one per replica): %+v", len(got), got)
	}
	for _, e := range got {
		switch e.Fields["service"] {
		case "db":
			if e.Fields["replica"] != sickID || e.Fields["tcp_connections"] != "2" || e.Fields["udp_sessions"] != "0" {
				t.Errorf("db event %+v", e.Fields)
			}
		case "dns":
			if e.Fields["tcp_connections"] != "0" || e.Fields["udp_sessions"] != "1" {
				t.Errorf("dns event %+v", e.Fields)
			}
		default:
			t.Errorf("event for %+v", e.Fields)
		}
	}

	// The same set again (a reconnect) ends nothing more; a new connection reaches the
	// healthy replica the server now hands out.
	res.set("db", addrOf(t, well.Addr()))
	tp.applyUnhealthy(&pb.UnhealthyReplicas{Version: 2, Replicas: []*pb.UnhealthyReplica{{Service: "db", ReplicaId: sickID}}})
	fresh := dialProxy(t, dbPort)
	defer fresh.Close()
	if err := roundTrip(fresh, "again"); err != nil {
		t.Fatalf("new connection: %v", err)
	}
	if n := countKind(tp, events.ConnectionsClosedUnhealthy); n != 2 {
		t.Fatalf("%d events after a repeated set", n)
	}
	waitFor(t, 10*time.Second, "every lease released", func() bool {
		issued, released := res.counts()
		return issued-released == 2 // other and fresh
	})
	res.checkNoDoubleRelease(t)
}

func countKind(tp *testProxy, kind string) int {
	evs, _ := tp.events.Since(0)
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// TestUnhealthyReplicaEndsUpgradedHTTP: a WebSocket through the HTTP router of a service with
// close_on_unhealthy is closed when its replica turns critical; the same upgrade for a service
// without the key is not tracked and stays open.
func TestUnhealthyReplicaEndsUpgradedHTTP(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	}))
	defer upstream.Close()
	up := netip.MustParseAddrPort(strings.TrimPrefix(upstream.URL, "http://"))
	res := newTestResolver()
	res.set("ws.example", up)
	res.set("plain.example", up)
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.DisableHTTP = false })
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	tp.applyBundle(&pb.PortMappingBundle{Version: 1, HttpServices: []*pb.PortMapping{
		{Service: "plain.example"}, {Service: "ws.example", Policy: &pb.ServicePolicy{CloseOnUnhealthy: true}}}})

	upgrade := func(host string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", tp.http.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", host)
		br := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade %s: %v %v", host, resp, err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatal(err)
		}
		return c, br
	}
	ws, wsr := upgrade("ws.example")
	plain, plainr := upgrade("plain.example")

	tp.applyUnhealthy(&pb.UnhealthyReplicas{Version: 2, Replicas: []*pb.UnhealthyReplica{
		{Service: "ws.example", ReplicaId: testReplicaID(up)}, {Service: "plain.example", ReplicaId: testReplicaID(up)}}})
	_ = ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := wsr.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("upgraded connection of a close_on_unhealthy service: read %v, want EOF", err)
	}
	_ = plain.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := plain.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(plainr, got); err != nil || string(got) != "pong" {
		t.Fatalf("upgraded connection without the key: %q %v", got, err)
	}
	evs, _ := tp.events.Since(0)
	n := 0
	for _, e := range evs {
		if e.Kind == events.ConnectionsClosedUnhealthy {
			n++
			if e.Fields["service"] != "ws.example" || e.Fields["http_requests"] != "1" {
				t.Errorf("event %+v", e.Fields)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d events", n)
	}
}
