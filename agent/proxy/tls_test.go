package proxy

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/sni"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// realClientHello returns the ClientHello crypto/tls sends for name, offering extra ALPN
// protocols of 200 bytes each (to make it large).
func realClientHello(t testing.TB, name string, extraALPN int) []byte {
	t.Helper()
	protos := []string{"nullnet-test"}
	for i := range extraALPN {
		protos = append(protos, fmt.Sprintf("%03d%s", i, strings.Repeat("x", 197)))
	}
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		_ = tls.Client(client, &tls.Config{ServerName: name, NextProtos: protos}).Handshake()
	}()
	got, read, err := sni.Read(server, make([]byte, 1024), 64<<10, time.Now().Add(5*time.Second))
	if err != nil || got != name {
		t.Fatalf("capturing a ClientHello: %q %v", got, err)
	}
	return bytes.Clone(read)
}

func unroutedEvents(tp *testProxy) []events.Event {
	evs, _ := tp.events.Since(0)
	var out []events.Event
	for _, e := range evs {
		if e.Kind == events.TLSConnectionUnrouted {
			out = append(out, e)
		}
	}
	return out
}

// TestTLSPassthroughBySNI: two tls services share one port of a real proxy, each backed by a
// Go TLS server with its own certificate; real `openssl s_client` connections reach the one
// their -servername names, see its certificate, and the backend sees the client's original
// ClientHello (its SNI and the custom ALPN protocol the client offered). Unknown or missing SNI,
// non-TLS bytes and a client too slow to send its ClientHello are closed and counted.
func TestTLSPassthroughBySNI(t *testing.T) {
	sink := inmemMetrics(t)
	res := newTestResolver()
	a, b := startTLSBackend(t, "a.example"), startTLSBackend(t, "b.example")
	res.set("a.example", netip.AddrPortFrom(loopback, uint16(a.port())))
	res.set("b.example", netip.AddrPortFrom(loopback, uint16(b.port())))
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.TLSHelloTimeout = 500 * time.Millisecond })
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: TLS, Port: port, Service: "a.example,b.example", Stack: "edge", IdleTimeout: time.Minute})
	tp.waitListening(t, TLS, port)

	for _, be := range []*tlsBackend{a, b} {
		out := sClient(t, port, be.name, "nullnet-test,h2", "ping\n")
		if cn := subjectCN(out); cn != be.name {
			t.Errorf("-servername %s: certificate CN %q, want %q\n%s", be.name, cn, be.name, out)
		}
		for _, want := range []string{
			fmt.Sprintf("backend=%s sni=%s alpn=nullnet-test", be.name, be.name),
			"ALPN protocol: nullnet-test", "echo ping"} {
			if !strings.Contains(out, want) {
				t.Errorf("-servername %s: output lacks %q:\n%s", be.name, want, out)
			}
		}
		if got := be.handshakes(); !reflect.DeepEqual(got, []string{"sni=" + be.name + " alpn=nullnet-test"}) {
			t.Errorf("backend %s saw %v", be.name, got)
		}
	}
	waitFor(t, 10*time.Second, "both leases released", func() bool {
		issued, released := res.counts()
		return issued == 2 && released == 2
	})

	t.Run("unknown sni", func(t *testing.T) {
		out := sClient(t, port, "c.example", "nullnet-test", "ping\n")
		if strings.Contains(out, "backend=") || subjectCN(out) != "" {
			t.Fatalf("unknown name reached a backend:\n%s", out)
		}
		waitFor(t, 5*time.Second, "unknown_sni counted", func() bool {
			return counterSum(sink, "nullnet.proxy.tls.unrouted", "reason=unknown_sni", fmt.Sprintf("port=%d", port)) == 1
		})
		evs := unroutedEvents(tp)
		if len(evs) != 1 || evs[0].Fields["reason"] != "unknown_sni" || evs[0].Fields["server_name"] != "c.example" ||
			evs[0].Fields["port"] != fmt.Sprint(port) || evs[0].Fields["client_ip"] != "127.0.0.1" {
			t.Fatalf("events %+v", evs)
		}
	})
	t.Run("no sni", func(t *testing.T) {
		if out := sClient(t, port, "", "", "ping\n"); strings.Contains(out, "backend=") {
			t.Fatalf("a ClientHello without SNI reached a backend:\n%s", out)
		}
		waitFor(t, 5*time.Second, "no_sni counted", func() bool {
			return counterSum(sink, "nullnet.proxy.tls.unrouted", "reason=no_sni") == 1
		})
	})
	t.Run("not tls", func(t *testing.T) {
		c := dialProxy(t, port)
		defer c.Close()
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 10)); err == nil || n > 0 {
			t.Fatalf("read %d, %v: want the connection closed", n, err)
		}
		waitFor(t, 5*time.Second, "not_tls counted", func() bool {
			return counterSum(sink, "nullnet.proxy.tls.unrouted", "reason=not_tls") == 1
		})
	})
	t.Run("slow client times out", func(t *testing.T) {
		c := dialProxy(t, port)
		defer c.Close()
		_, _ = c.Write(realClientHello(t, "a.example", 0)[:10])
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 10)); err == nil {
			t.Fatal("connection not closed")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("closed after %s; the hello timeout is 500ms", d)
		}
		waitFor(t, 5*time.Second, "timeout counted", func() bool {
			return counterSum(sink, "nullnet.proxy.tls.unrouted", "reason=timeout") == 1
		})
	})
	t.Run("connect and close is counted, not reported", func(t *testing.T) {
		before := len(unroutedEvents(tp))
		dialProxy(t, port).Close()
		waitFor(t, 5*time.Second, "incomplete counted", func() bool {
			return counterSum(sink, "nullnet.proxy.tls.unrouted", "reason=incomplete") == 1
		})
		if got := len(unroutedEvents(tp)); got != before {
			t.Fatalf("%d new events for a connect-and-close", got-before)
		}
	})
	t.Run("a removed service is unknown at once, without a rebind", func(t *testing.T) {
		opened := 0
		evs, _ := tp.events.Since(0)
		for _, e := range evs {
			if e.Kind == events.ListenerOpened {
				opened++
			}
		}
		tp.apply(2, Mapping{Protocol: TLS, Port: port, Service: "a.example", Stack: "edge", IdleTimeout: time.Minute})
		if out := sClient(t, port, "b.example", "", "ping\n"); strings.Contains(out, "backend=") {
			t.Fatalf("b.example still routed after its removal:\n%s", out)
		}
		if out := sClient(t, port, "a.example", "", "ping\n"); !strings.Contains(out, "backend=a.example") {
			t.Fatalf("a.example no longer routed:\n%s", out)
		}
		evs, _ = tp.events.Since(0)
		for _, e := range evs {
			if e.Kind == events.ListenerOpened {
				opened--
			}
		}
		if opened != 0 {
			t.Fatalf("the listener was rebound (%d more listener_opened)", -opened)
		}
	})
	waitFor(t, 10*time.Second, "every lease released", func() bool {
		issued, released := res.counts()
		return issued == released
	})
	res.checkNoDoubleRelease(t)
}

// TestTLSPassthroughByteExact: a ClientHello sent one byte at a time (and one of 10 KiB, more
// than the first buffer holds), then a payload and a half-close: the upstream receives exactly
// the bytes sent, in order, and its answer written after the client's FIN comes back (the TCP
// relay's guarantees hold after the replay). A ClientHello over 16 KiB is refused.
func TestTLSPassthroughByteExact(t *testing.T) {
	sink := inmemMetrics(t)
	res := newTestResolver()
	up := tcpUpstream(t, hashReply)
	res.set("raw.example", addrOf(t, up.Addr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.apply(1, Mapping{Protocol: TLS, Port: port, Service: "raw.example"})
	tp.waitListening(t, TLS, port)

	large := realClientHello(t, "raw.example", 50)
	if len(large) < 10<<10 || len(large) > tlsHelloMax {
		t.Fatalf("large ClientHello of %d bytes", len(large))
	}
	passthroughExact(t, port, large, 1<<20)
	passthroughExact(t, port, realClientHello(t, "raw.example", 0), 64<<20)
	waitFor(t, 10*time.Second, "leases released", func() bool {
		issued, released := res.counts()
		return issued == 2 && released == 2
	})

	huge := realClientHello(t, "raw.example", 90) // over 16 KiB: two records
	if len(huge) <= tlsHelloMax {
		t.Fatalf("huge ClientHello of %d bytes", len(huge))
	}
	c := dialProxy(t, port)
	defer c.Close()
	_, _ = c.Write(huge)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a ClientHello over 16 KiB was relayed")
	}
	waitFor(t, 5*time.Second, "too_large counted", func() bool {
		return counterSum(sink, "nullnet.proxy.tls.unrouted", "reason=too_large") == 1
	})
	if issued, _ := res.counts(); issued != 2 {
		t.Fatalf("%d leases: the oversized hello was resolved", issued)
	}
}

// passthroughExact sends hello one small piece at a time, then size random bytes, half-closes,
// and checks the upstream's digest of everything it received.
func passthroughExact(t *testing.T, port uint16, hello []byte, size int64) {
	t.Helper()
	c := dialProxy(t, port)
	defer c.Close()
	want := sha256.New()
	for i := range hello {
		if _, err := c.Write(hello[i : i+1]); err != nil {
			t.Fatal(err)
		}
		want.Write(hello[i : i+1])
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // separate segments
		}
	}
	if _, err := io.Copy(c, io.TeeReader(io.LimitReader(newRandReader(9), size), want)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, want.Sum(nil)) {
		t.Fatalf("upstream digest %x (%v), want %x (ClientHello of %d bytes)", got, err, want.Sum(nil), len(hello))
	}
}

func TestDesiredTableGroupsTLS(t *testing.T) {
	tls := func(svc, stack string, port, secs uint32) *pb.PortMapping {
		return &pb.PortMapping{Service: svc, Stack: stack, Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TLS,
			ListenPort: port, IdleTimeoutSecs: uint64(secs)}
	}
	b := &pb.PortMappingBundle{Mappings: []*pb.PortMapping{
		tls("b.example", "s2", 8443, 30), tls("a.example", "s1", 8443, 60), tls("a.example", "s1", 8443, 60),
		tls("c.example", "s1", 9443, 0),
		{Service: "raw", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 7000},
		tls("Bad_Name", "s1", 8443, 0),
	}}
	want, problems := desiredTable(b)
	exp := map[listenerKey]Mapping{
		{TLS, 8443}: {Protocol: TLS, Port: 8443, Service: "a.example,b.example", Stack: "s1,s2", IdleTimeout: time.Minute},
		{TLS, 9443}: {Protocol: TLS, Port: 9443, Service: "c.example", Stack: "s1"},
		{TCP, 7000}: {Protocol: TCP, Port: 7000, Service: "raw"},
	}
	if !reflect.DeepEqual(want, exp) {
		t.Errorf("table %+v\nwant  %+v", want, exp)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "invalid service name") {
		t.Errorf("problems %v", problems)
	}
	for name, in := range map[string]bool{"a.example": true, "b.example": true, "example": false, "a.exampl": false, "": false} {
		if tlsRoute("a.example,b.example", name) != in {
			t.Errorf("tlsRoute(%q) = %v", name, !in)
		}
	}
}
