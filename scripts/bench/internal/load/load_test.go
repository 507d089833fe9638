package load

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/proxyproto"
)

// The generators must count only complete exchanges; these run against the bench's own backends
// on loopback and assert correctness, never speed.
func TestConnRateAgainstResponder(t *testing.T) {
	s, err := StartTCPResponder("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := ConnRate(context.Background(), s.Addr(), 2, 300*time.Millisecond)
	if r.Ops == 0 || r.Errors != 0 {
		t.Fatalf("ops=%d errors=%d, want some and none", r.Ops, r.Errors)
	}
	if r.P50 <= 0 || r.P99 < r.P50 {
		t.Errorf("latency p50=%v p99=%v", r.P50, r.P99)
	}
	if err := Probe(s.Addr()); err != nil {
		t.Errorf("Probe: %v", err)
	}
}

func TestConnRateCountsFailures(t *testing.T) {
	s, err := StartTCPResponder("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	s.Close() // nothing listens now
	r := ConnRate(context.Background(), addr, 1, 100*time.Millisecond)
	if r.Ops != 0 || r.Errors == 0 {
		t.Fatalf("ops=%d errors=%d, want none and some", r.Ops, r.Errors)
	}
}

func TestUDPRoundTripsAgainstEcho(t *testing.T) {
	e, err := StartUDPEcho("127.0.0.1:0", 1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r, err := UDPRoundTrips(context.Background(), e.Addr(), 2, 4, 64, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops == 0 || r.P99 <= 0 {
		t.Fatalf("ops=%d p99=%v", r.Ops, r.P99)
	}
}

// IdleSessions counts a session only when its echo came back: all of them against an echo, none
// against a sink (which never answers).
func TestIdleSessionsCountsEchoedOnly(t *testing.T) {
	for _, c := range []struct {
		sink bool
		want int
	}{{false, 200}, {true, 0}} {
		e, err := StartUDPEcho("127.0.0.1:0", 1, c.sink)
		if err != nil {
			t.Fatal(err)
		}
		n := 200
		if c.sink {
			n = 2 // each unanswered session waits 3 × 1 s
		}
		got, err := IdleSessions(context.Background(), e.Addr(), n)
		e.Close()
		if got != c.want || (c.want > 0 && err != nil) || (c.want == 0 && err == nil) {
			t.Errorf("sink=%v: %d sessions confirmed (err %v), want %d", c.sink, got, err, c.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	s := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	cases := map[float64]time.Duration{0.5: 5, 0.99: 10, 0: 1}
	for q, want := range cases {
		if got := Quantile(s, q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("empty input")
	}
}

// UDPFlood against a local echo: the flood goes out from distinct loopback sources, the
// established client gets every answer.
func TestUDPFloodSmall(t *testing.T) {
	echo, err := StartUDPEcho("127.0.0.1:0", 2, false)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	r, err := UDPFlood(context.Background(), echo.Addr(), 1000, 2, 20000)
	if err != nil {
		t.Fatal(err)
	}
	if r.Flooded != 2000 || r.Sent == 0 || r.Lost != 0 || r.P99 <= 0 {
		t.Fatalf("flood result %+v", r)
	}
	if a, b := FloodSource(0), FloodSource(1); a.Equal(b) || a.To4()[0] != 127 || a.To4()[1] < 10 {
		t.Fatalf("flood sources %v %v", a, b)
	}
}

// The PROXY protocol responder serves connections with and without a v2 header and counts the
// headers (written here by nullnet's own writer, as the relay writes them).
func TestProxyProtocolResponder(t *testing.T) {
	s, err := StartProxyProtocolResponder("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := Probe(s.Addr()); err != nil {
		t.Fatalf("without a header: %v", err)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := proxyproto.AppendV2(nil, proxyproto.Stream, netip.MustParseAddrPort("[2001:db8::1]:5"), netip.MustParseAddrPort("[2001:db8::2]:6"))
	if _, err := c.Write(append(hdr, make([]byte, RequestSize)...)); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil || len(resp) != ResponseSize {
		t.Fatalf("with a header: %d bytes, %v", len(resp), err)
	}
	if n := s.ProxyHeaders.Load(); n != 1 {
		t.Fatalf("%d headers counted, want 1", n)
	}
}
