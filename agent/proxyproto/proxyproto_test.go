package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	pp "github.com/pires/go-proxyproto"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
		err  bool
	}{{"", None, false}, {"v1", V1, false}, {"v2", V2, false}, {"V2", None, true}, {"2", None, true}} {
		got, err := ParseVersion(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseVersion(%q) = %v, %v", tc.in, got, err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

func TestAppendV1(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		src, dst netip.AddrPort
		want     string
	}{
		{ap("127.0.0.23:40000"), ap("10.0.0.1:8080"), "PROXY TCP4 127.0.0.23 10.0.0.1 40000 8080\r\n"},
		{ap("[2001:db8::1]:1"), ap("[2001:db8::2]:65535"), "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"},
		// Dual-stack listener: an IPv4 client on the IPv4-mapped form of an IPv4 local address.
		{ap("[::ffff:192.0.2.7]:5"), ap("[::ffff:192.0.2.1]:80"), "PROXY TCP4 192.0.2.7 192.0.2.1 5 80\r\n"},
		// An IPv4 client on an IPv6 local address: one family, IPv4-mapped.
		{ap("192.0.2.7:5"), ap("[2001:db8::2]:80"), "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::2 5 80\r\n"},
		{netip.AddrPort{}, ap("10.0.0.1:1"), "PROXY UNKNOWN\r\n"},
	} {
		got := string(AppendV1(nil, tc.src, tc.dst))
		if got != tc.want {
			t.Errorf("AppendV1(%v, %v) = %q, want %q", tc.src, tc.dst, got, tc.want)
		}
		if len(got) > MaxV1 {
			t.Errorf("%q longer than %d", got, MaxV1)
		}
	}
}

// TestAppendParsesBack writes each kind of header and reads it with the library.
func TestAppendParsesBack(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		v        Version
		tr       Transport
		src, dst netip.AddrPort
	}{
		{V1, Stream, ap("127.0.0.23:40000"), ap("10.0.0.1:8080")},
		{V1, Stream, ap("[2001:db8::1]:1"), ap("[2001:db8::2]:2")},
		{V2, Stream, ap("127.0.0.23:40000"), ap("10.0.0.1:8080")},
		{V2, Stream, ap("[2001:db8::1]:1"), ap("[2001:db8::2]:2")},
		{V2, Datagram, ap("127.0.0.23:5353"), ap("10.0.0.1:53")},
		{V2, Datagram, ap("[2001:db8::1]:1"), ap("[::ffff:10.0.0.1]:2")},
		{V1, Datagram, ap("127.0.0.23:5353"), ap("10.0.0.1:53")}, // written as v2
	} {
		b := Append(nil, tc.v, tc.tr, tc.src, tc.dst)
		h, n, err := ParseDatagram(append(b, "payload"...))
		if err != nil {
			t.Fatalf("%v %v: %q: %v", tc.v, tc.tr, b, err)
		}
		if n != len(b) || h.Local {
			t.Fatalf("%v: header length %d (wrote %d), local %v", tc.v, n, len(b), h.Local)
		}
		wantSrc := tc.src
		if s, d := pair(tc.src, tc.dst); s.Is4() && d.Is4() {
			wantSrc = netip.AddrPortFrom(tc.src.Addr().Unmap(), tc.src.Port())
		}
		if h.Source != wantSrc || h.Dest.Port() != tc.dst.Port() {
			t.Errorf("%v %v: parsed %v -> %v, wrote %v -> %v", tc.v, tc.tr, h.Source, h.Dest, tc.src, tc.dst)
		}
	}
	// No address: v2 LOCAL, which the library reads as the sender's own connection.
	h, _, err := ParseDatagram(AppendV2(nil, Stream, netip.AddrPort{}, netip.AddrPort{}))
	if err != nil || !h.Local {
		t.Fatalf("LOCAL: %+v %v", h, err)
	}
}

func TestParseDatagramRejects(t *testing.T) {
	good := AppendV2(nil, Datagram, netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("5.6.7.8:9"))
	for _, tc := range []struct {
		name, reason string
		d            []byte
	}{
		{"empty", ReasonMissing, nil},
		{"plain payload", ReasonMissing, []byte("hello")},
		{"truncated", ReasonInvalid, good[:20]},
		{"bad version", ReasonInvalid, append(append(append([]byte(nil), good[:12]...), 0x31), good[13:]...)},
	} {
		_, _, err := ParseDatagram(tc.d)
		var e *Error
		if !errors.As(err, &e) || e.Reason != tc.reason {
			t.Errorf("%s: %v, want reason %s", tc.name, err, tc.reason)
		}
	}
}

// pipe returns both ends of a loopback TCP connection.
func pipe(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestRead(t *testing.T) {
	src, dst := netip.MustParseAddrPort("203.0.113.9:41000"), netip.MustParseAddrPort("10.0.0.1:443")
	for _, tc := range []struct {
		name   string
		send   []byte
		close  bool
		reason string // "" = accepted
		rest   string
	}{
		{"v1 with data", append(AppendV1(nil, src, dst), "GET / HTTP/1.0\r\n"...), false, "", "GET / HTTP/1.0\r\n"},
		{"v2 alone", AppendV2(nil, Stream, src, dst), false, "", ""},
		{"v2 with data", append(AppendV2(nil, Stream, src, dst), "hi"...), false, "", "hi"},
		{"no header", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, ReasonMissing, ""},
		{"garbage v1", []byte("PROXY TCP4 nonsense\r\n"), false, ReasonInvalid, ""},
		{"v1 too long", append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 200)...), false, ReasonInvalid, ""},
		{"half a v2 then silence", AppendV2(nil, Stream, src, dst)[:14], false, ReasonTimeout, ""},
		{"half a v2 then close", AppendV2(nil, Stream, src, dst)[:14], true, ReasonClosed, ""},
		{"nothing then close", nil, true, ReasonMissing, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pipe(t)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				c.Close()
			}
			start := time.Now()
			h, rest, err := Read(s, 300*time.Millisecond)
			if time.Since(start) > 2*time.Second {
				t.Fatalf("Read took %s", time.Since(start))
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				if h.Source != src || h.Dest != dst || string(rest) != tc.rest {
					t.Fatalf("got %+v rest %q", h, rest)
				}
				// The deadline is gone: the connection goes on.
				if _, err := c.Write([]byte("more")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 4)
				if _, err := s.Read(buf); err != nil || string(buf) != "more" {
					t.Fatalf("after header: %q %v", buf, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Reason != tc.reason {
				t.Fatalf("got %v, want reason %s", err, tc.reason)
			}
		})
	}
}

// FuzzAppend checks every header Append writes against the library's parser: same addresses,
// same length, the payload after it untouched.
func FuzzAppend(f *testing.F) {
	f.Add([]byte{127, 0, 0, 23}, uint16(40000), []byte{10, 0, 0, 1}, uint16(80), uint8(1), false)
	f.Add(bytes.Repeat([]byte{0x20}, 16), uint16(1), []byte{1, 2, 3, 4}, uint16(2), uint8(2), true)
	f.Fuzz(func(t *testing.T, s []byte, sport uint16, d []byte, dport uint16, v uint8, dgram bool) {
		sa, ok1 := netip.AddrFromSlice(s)
		da, ok2 := netip.AddrFromSlice(d)
		if !ok1 || !ok2 {
			return
		}
		src, dst := netip.AddrPortFrom(sa, sport), netip.AddrPortFrom(da, dport)
		ver := Version(v%2 + 1)
		tr := Stream
		if dgram {
			tr = Datagram
		}
		b := Append(nil, ver, tr, src, dst)
		h, err := pp.Read(bufio.NewReader(bytes.NewReader(append(b, 'x'))))
		if err != nil {
			t.Fatalf("library rejects %q: %v", b, err)
		}
		got := fromLibrary(h)
		ws, wd := pair(src, dst)
		if got.Source.Addr() != ws.Unmap() && got.Source.Addr() != ws || got.Source.Port() != sport ||
			got.Dest.Port() != dport || got.Dest.Addr().Unmap() != wd.Unmap() {
			t.Fatalf("wrote %v -> %v, library read %+v from %q", src, dst, got, b)
		}
		if ver == V2 || dgram {
			if b[12] != 0x21 || (dgram && b[13]&0xf != 2) || (!dgram && b[13]&0xf != 1) {
				t.Fatalf("v2 header %x", b[:16])
			}
		}
		_, n, err := ParseDatagram(append(b, 'x'))
		if err != nil || n != len(b) {
			t.Fatalf("payload offset %d, header %d: %v", n, len(b), err)
		}
	})
}

// FuzzParseDatagram feeds arbitrary datagrams from a "trusted" peer: never a panic, and an
// accepted header's payload offset is inside the datagram.
func FuzzParseDatagram(f *testing.F) {
	f.Add(AppendV2(nil, Datagram, netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("5.6.7.8:9")))
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nx"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x12\xff\xff"))
	f.Fuzz(func(t *testing.T, d []byte) {
		h, n, err := ParseDatagram(d)
		if err != nil {
			return
		}
		if n < 0 || n > len(d) {
			t.Fatalf("offset %d of %d", n, len(d))
		}
		if !h.Local && (!h.Source.IsValid() || !h.Dest.IsValid()) {
			t.Fatalf("non-local header without addresses: %+v", h)
		}
	})
}

// BenchmarkAppend compares the hand-written v2 header with the library's formatter: the
// reason the hot path writes its own.
func BenchmarkAppend(b *testing.B) {
	src, dst := netip.MustParseAddrPort("203.0.113.9:41000"), netip.MustParseAddrPort("10.0.0.1:443")
	b.Run("ours-v2", func(b *testing.B) {
		buf := make([]byte, 0, 64)
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendV2(buf[:0], Stream, src, dst)
		}
	})
	b.Run("ours-v1", func(b *testing.B) {
		buf := make([]byte, 0, 128)
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendV1(buf[:0], src, dst)
		}
	})
	b.Run("library-v2", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := pp.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
			if _, err := h.Format(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
