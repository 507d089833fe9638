package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// captureHello returns the first bytes a real crypto/tls client sends: its ClientHello, in
// however many records crypto/tls chose.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		_ = tls.Client(client, cfg).Handshake() // fails once the pipe closes: no server
	}()
	buf := make([]byte, DefaultMaxHello)
	name, read, err := Read(server, buf, DefaultMaxHello, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatalf("reading crypto/tls's ClientHello: %v", err)
	}
	if cfg.ServerName != "" && !strings.EqualFold(name, strings.TrimSuffix(cfg.ServerName, ".")) {
		t.Fatalf("name %q, want %q", name, cfg.ServerName)
	}
	return bytes.Clone(read)
}

// record frames payload as handshake records of at most size bytes each.
func records(payload []byte, size int) []byte {
	var out []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		out = append(out, typeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

// message returns the handshake message of a single-record ClientHello.
func message(t testing.TB, hello []byte) []byte {
	t.Helper()
	n := int(hello[3])<<8 | int(hello[4])
	if len(hello) != recordHeaderLen+n {
		t.Fatalf("ClientHello of %d bytes in more than one record", len(hello))
	}
	return hello[recordHeaderLen:]
}

// helloWith builds a minimal ClientHello whose extensions are exts.
func helloWith(exts []byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	if exts != nil {
		body = append(body, byte(len(exts)>>8), byte(len(exts)))
		body = append(body, exts...)
	}
	msg := append([]byte{typeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return records(msg, maxRecordPayload)
}

// sniExt builds a server_name extension holding one entry of type typ.
func sniExt(typ byte, name string) []byte {
	entry := append([]byte{typ, byte(len(name) >> 8), byte(len(name))}, name...)
	list := append([]byte{byte(len(entry) >> 8), byte(len(entry))}, entry...)
	return append([]byte{0, 0, byte(len(list) >> 8), byte(len(list))}, list...)
}

func TestParseRealClientHello(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        *tls.Config
		want       string
		wantErr    error
		minVersion uint16
	}{
		{name: "tls13 with alpn", cfg: &tls.Config{ServerName: "a.example", NextProtos: []string{"nullnet-test", "h2"}}, want: "a.example"},
		{name: "tls12 only", cfg: &tls.Config{ServerName: "b.example", MaxVersion: tls.VersionTLS12}, want: "b.example"},
		{name: "upper case and trailing dot", cfg: &tls.Config{ServerName: "Svc.Example.", InsecureSkipVerify: true}, want: "svc.example"},
		{name: "no server name", cfg: &tls.Config{InsecureSkipVerify: true}, wantErr: ErrNoServerName},
		{name: "ip literal is not sent", cfg: &tls.Config{ServerName: "192.0.2.1"}, wantErr: ErrNoServerName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			go func() {
				defer client.Close()
				_ = tls.Client(client, tc.cfg).Handshake()
			}()
			name, read, err := Read(server, make([]byte, DefaultMaxHello), DefaultMaxHello, time.Now().Add(5*time.Second))
			if !errors.Is(err, tc.wantErr) || name != tc.want {
				t.Fatalf("Read = %q, %v; want %q, %v", name, err, tc.want, tc.wantErr)
			}
			if len(read) == 0 || read[0] != typeHandshake {
				t.Fatalf("bytes read not returned: %x", read)
			}
			// The same bytes, split into many small records, and delivered in pieces.
			if tc.wantErr == nil {
				msg := message(t, read)
				for _, size := range []int{1, 7, 100} {
					got, err := Parse(records(msg, size))
					if err != nil || got != tc.want {
						t.Fatalf("records of %d bytes: %q, %v", size, got, err)
					}
				}
				for cut := range len(read) {
					if _, err := Parse(read[:cut]); !errors.Is(err, ErrShort) {
						t.Fatalf("truncated at %d of %d: %v, want ErrShort", cut, len(read), err)
					}
				}
			}
		})
	}
}

func TestParseTable(t *testing.T) {
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
		err  error
	}{
		{"empty", nil, "", ErrShort},
		{"partial header", []byte{typeHandshake, 3, 1}, "", ErrShort},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "", ErrNotTLS},
		{"ssh banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), "", ErrNotTLS},
		{"sslv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15}, "", ErrNotTLS},
		{"alert record", []byte{0x15, 3, 3, 0, 2, 2, 40}, "", ErrNotTLS},
		{"zero-length record", []byte{typeHandshake, 3, 1, 0, 0}, "", ErrMalformed},
		{"record too long", []byte{typeHandshake, 3, 1, 0x40, 0x01}, "", ErrMalformed},
		{"server hello", records([]byte{0x02, 0, 0, 4, 1, 2, 3, 4}, 100), "", ErrNotTLS},
		{"server hello, partial record", []byte{typeHandshake, 3, 3, 0, 50, 0x02, 0, 0}, "", ErrNotTLS},
		{"good", helloWith(sniExt(0, "x.example")), "x.example", nil},
		{"no extensions", helloWith(nil), "", ErrNoServerName},
		{"other extension only", helloWith([]byte{0, 0x10, 0, 3, 0, 1, 'a'}), "", ErrNoServerName},
		{"non-host name type", helloWith(sniExt(1, "x.example")), "", ErrNoServerName},
		{"empty name", helloWith(sniExt(0, "")), "", ErrNoServerName},
		{"name only a dot", helloWith(sniExt(0, ".")), "", ErrNoServerName},
		{"name too long", helloWith(sniExt(0, long)), "", ErrMalformed},
		{"name with space", helloWith(sniExt(0, "a b")), "", ErrMalformed},
		{"name with NUL", helloWith(sniExt(0, "a\x00b")), "", ErrMalformed},
		{"name with UTF-8", helloWith(sniExt(0, "ä.example")), "", ErrMalformed},
		{"extension overruns", helloWith([]byte{0, 0, 0, 9, 0, 1}), "", ErrMalformed},
		{"sni list overruns", helloWith([]byte{0, 0, 0, 2, 0, 9}), "", ErrMalformed},
		{"sni entry overruns", helloWith([]byte{0, 0, 0, 5, 0, 3, 0, 0, 9}), "", ErrMalformed},
		{"trailing bytes after extensions", append(bytes.Clone(helloWith(sniExt(0, "x"))), 0), "x", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Fatalf("Parse = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseBadBodies(t *testing.T) {
	// Bodies whose header fields lie about their lengths, inside well-framed records.
	frame := func(body []byte) []byte {
		msg := append([]byte{typeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
		return records(msg, maxRecordPayload)
	}
	head := append([]byte{3, 3}, make([]byte, 32)...)
	for name, body := range map[string][]byte{
		"too short":             {3, 3},
		"session id too long":   append(append(bytes.Clone(head), 33), make([]byte, 40)...),
		"odd cipher suites":     append(bytes.Clone(head), 0, 0, 3, 1, 2, 3, 1, 0),
		"no compression":        append(bytes.Clone(head), 0, 0, 2, 0x13, 1, 0),
		"extensions short":      append(bytes.Clone(head), 0, 0, 2, 0x13, 1, 1, 0, 0),
		"extensions overrun":    append(bytes.Clone(head), 0, 0, 2, 0x13, 1, 1, 0, 0, 10, 0),
		"extensions underclaim": append(bytes.Clone(head), 0, 0, 2, 0x13, 1, 1, 0, 0, 0, 7),
	} {
		if _, err := Parse(frame(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// slowConn delivers its bytes a few at a time.
type slowConn struct {
	data     []byte
	step     int
	deadline time.Time
}

func (c *slowConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.step, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func (c *slowConn) SetReadDeadline(t time.Time) error { c.deadline = t; return nil }

func TestReadBounds(t *testing.T) {
	hello := captureHello(t, &tls.Config{ServerName: "a.example"})
	t.Run("byte by byte", func(t *testing.T) {
		c := &slowConn{data: bytes.Clone(hello), step: 1}
		name, read, err := Read(c, make([]byte, DefaultMaxHello), DefaultMaxHello, time.Now().Add(time.Second))
		if err != nil || name != "a.example" || !bytes.Equal(read, hello) {
			t.Fatalf("%q %v (%d of %d bytes)", name, err, len(read), len(hello))
		}
		if !c.deadline.IsZero() {
			t.Fatal("deadline not cleared")
		}
	})
	t.Run("small first buffer grows", func(t *testing.T) {
		c := &slowConn{data: bytes.Clone(hello), step: 100}
		first := make([]byte, 64)
		name, read, err := Read(c, first, DefaultMaxHello, time.Now().Add(time.Second))
		if err != nil || name != "a.example" || !bytes.Equal(read, hello) {
			t.Fatalf("%q %v (%d of %d bytes)", name, err, len(read), len(hello))
		}
	})
	t.Run("buffer too small", func(t *testing.T) {
		c := &slowConn{data: bytes.Clone(hello), step: 64}
		_, read, err := Read(c, make([]byte, 64), len(hello)-1, time.Now().Add(time.Second))
		if !errors.Is(err, ErrTooLarge) || len(read) != len(hello)-1 || Reason(err) != "too_large" {
			t.Fatalf("%v, %d bytes", err, len(read))
		}
	})
	t.Run("client closes early", func(t *testing.T) {
		c := &slowConn{data: bytes.Clone(hello[:20]), step: 64}
		_, read, err := Read(c, make([]byte, DefaultMaxHello), DefaultMaxHello, time.Now().Add(time.Second))
		if Reason(err) != "incomplete" || len(read) != 20 {
			t.Fatalf("%v (%s), %d bytes", err, Reason(err), len(read))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		client, server := net.Pipe()
		defer client.Close()
		defer server.Close()
		go func() { _, _ = client.Write(hello[:10]) }()
		start := time.Now()
		_, read, err := Read(server, make([]byte, DefaultMaxHello), DefaultMaxHello, time.Now().Add(200*time.Millisecond))
		if Reason(err) != "timeout" || len(read) != 10 || time.Since(start) > 2*time.Second {
			t.Fatalf("%v (%s), %d bytes after %s", err, Reason(err), len(read), time.Since(start))
		}
	})
}
