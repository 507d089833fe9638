// Package sni reads the server name (SNI) a TLS client asks for from the first bytes of its
// connection, without terminating TLS: the ClientHello is parsed, never answered, so that the
// bytes can be replayed unchanged to the server that does terminate it.
//
// The parser is pure and bounded: it only looks at the bytes it is given, never allocates in
// proportion to lengths the peer claims, and tells "incomplete, read more" (ErrShort) apart from
// "this can never be a ClientHello" (ErrNotTLS, ErrMalformed).
package sni

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Errors Parse and Read return. Callers count them by Reason.
var (
	// ErrShort: the bytes end before the ClientHello does; read more and parse again.
	ErrShort = errors.New("incomplete ClientHello")
	// ErrNotTLS: the first record is not a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrMalformed: a length or field of the records or the ClientHello is inconsistent.
	ErrMalformed = errors.New("malformed ClientHello")
	// ErrNoServerName: a well-formed ClientHello without a server_name extension (or an empty
	// name, or an IP literal sent as one).
	ErrNoServerName = errors.New("no server name in ClientHello")
	// ErrTooLarge: the ClientHello does not fit in the bytes the reader may buffer.
	ErrTooLarge = errors.New("ClientHello too large")
)

const (
	recordHeaderLen  = 5
	maxRecordPayload = 1 << 14 // RFC 8446 5.1: TLSPlaintext.length must not exceed 2^14
	typeHandshake    = 0x16
	typeClientHello  = 0x01
	extServerName    = 0x0000
	nameTypeHost     = 0x00
	// MaxNameLen bounds a host name (RFC 1035: 253 characters, 255 octets on the wire).
	MaxNameLen = 255
)

// DefaultMaxHello is a generous bound on a ClientHello with its record headers: today's
// browsers send 0.5–2 KiB (post-quantum key shares included); 16 KiB leaves room for many
// extensions and still bounds what one connection may make the proxy buffer.
const DefaultMaxHello = 16 << 10

// Reason names an error for metric labels and events: "not_tls", "malformed", "no_sni",
// "too_large", "timeout" (a read deadline), "incomplete" (the client closed early) or "read".
func Reason(err error) string {
	var ne interface{ Timeout() bool }
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotTLS):
		return "not_tls"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrNoServerName):
		return "no_sni"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrShort), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "incomplete"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "read"
	}
}

// Parse returns the server name of the ClientHello at the start of buf, which holds TLS records
// as they arrived (a ClientHello may span several handshake records). The name is lower-cased
// and a trailing dot removed: host names compare case-insensitively.
func Parse(buf []byte) (string, error) {
	hello, err := handshakeMessage(buf)
	if err != nil {
		return "", err
	}
	return serverName(hello)
}

// handshakeMessage reassembles the first handshake message (a ClientHello) from the records at
// the start of buf and returns its body.
func handshakeMessage(buf []byte) ([]byte, error) {
	var msg []byte // the handshake bytes seen so far; at most len(buf)
	need := -1     // the whole message's length once its header is known
	for {
		if len(buf) < recordHeaderLen {
			return nil, ErrShort
		}
		if buf[0] != typeHandshake {
			return nil, ErrNotTLS
		}
		if buf[1] != 3 { // legacy_record_version 3.x (SSL 3.0 to TLS 1.3 all say 3)
			return nil, ErrNotTLS
		}
		n := int(buf[3])<<8 | int(buf[4])
		if n == 0 || n > maxRecordPayload {
			return nil, fmt.Errorf("%w: record length %d", ErrMalformed, n)
		}
		if len(buf) < recordHeaderLen+n {
			// The part of the record already read is enough to reject a wrong message type.
			if len(msg) == 0 && len(buf) > recordHeaderLen && buf[recordHeaderLen] != typeClientHello {
				return nil, fmt.Errorf("%w: handshake type %d, not ClientHello", ErrNotTLS, buf[recordHeaderLen])
			}
			return nil, ErrShort
		}
		rec := buf[recordHeaderLen : recordHeaderLen+n]
		buf = buf[recordHeaderLen+n:]
		if msg == nil && n >= 4 && rec[0] == typeClientHello {
			// The usual case: the whole ClientHello in its first record, parsed in place.
			if whole := 4 + (int(rec[1])<<16 | int(rec[2])<<8 | int(rec[3])); whole <= n {
				return rec[4:whole], nil
			}
		}
		msg = append(msg, rec...)
		if msg[0] != typeClientHello {
			return nil, fmt.Errorf("%w: handshake type %d, not ClientHello", ErrNotTLS, msg[0])
		}
		if need < 0 && len(msg) >= 4 {
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		}
		if need >= 0 && len(msg) >= need {
			return msg[4:need], nil
		}
	}
}

// reader walks a byte slice; every read is bounds-checked and sets ok=false when short.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) u8() int {
	if len(r.b) < 1 {
		r.ok = false
		return 0
	}
	v := int(r.b[0])
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() int {
	if len(r.b) < 2 {
		r.ok = false
		return 0
	}
	v := int(r.b[0])<<8 | int(r.b[1])
	r.b = r.b[2:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.ok = false
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// serverName parses a ClientHello body (RFC 8446 4.1.2) up to its server_name extension
// (RFC 6066 3).
func serverName(hello []byte) (string, error) {
	r := &reader{b: hello, ok: true}
	r.bytes(2 + 32)            // legacy_version, random
	sid := r.bytes(r.u8())     // legacy_session_id
	suites := r.bytes(r.u16()) // cipher_suites
	comp := r.bytes(r.u8())    // legacy_compression_methods
	if !r.ok || len(sid) > 32 || len(suites) < 2 || len(suites)%2 != 0 || len(comp) < 1 {
		return "", fmt.Errorf("%w: ClientHello header", ErrMalformed)
	}
	if len(r.b) == 0 {
		return "", ErrNoServerName // no extensions at all (TLS 1.0-era clients)
	}
	exts := &reader{b: r.bytes(r.u16()), ok: true}
	if !r.ok || len(r.b) != 0 {
		return "", fmt.Errorf("%w: extensions length", ErrMalformed)
	}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.bytes(exts.u16())
		if !exts.ok {
			return "", fmt.Errorf("%w: extension length", ErrMalformed)
		}
		if typ != extServerName {
			continue
		}
		return hostName(data)
	}
	return "", ErrNoServerName
}

// hostName reads the host_name entry of a server_name extension.
func hostName(data []byte) (string, error) {
	r := &reader{b: data, ok: true}
	list := &reader{b: r.bytes(r.u16()), ok: true}
	if !r.ok || len(r.b) != 0 {
		return "", fmt.Errorf("%w: server_name list length", ErrMalformed)
	}
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.bytes(list.u16())
		if !list.ok {
			return "", fmt.Errorf("%w: server_name entry length", ErrMalformed)
		}
		if typ != nameTypeHost {
			continue
		}
		return checkName(name)
	}
	return "", ErrNoServerName
}

// checkName accepts a host name of printable ASCII without spaces (the caller looks it up in
// a table of DNS names, so anything else would only reach logs): lower-cased, trailing dot
// removed.
func checkName(b []byte) (string, error) {
	if len(b) > 0 && b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "", ErrNoServerName
	}
	if len(b) > MaxNameLen {
		return "", fmt.Errorf("%w: server name of %d bytes", ErrMalformed, len(b))
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return "", fmt.Errorf("%w: server name holds byte 0x%02x", ErrMalformed, c)
		}
	}
	return strings.ToLower(string(b)), nil
}

// Conn is what Read needs of a connection.
type Conn interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// Read reads from c until the ClientHello at its start is complete, or limit bytes were read, or
// the deadline passes. It returns the server name and every byte read (to be replayed to the
// upstream), also on error. Reading starts in buf; a ClientHello that does not fit moves to a
// buffer of its own, doubled as needed up to limit bytes, so that the usual hello (under 2 KiB)
// costs a small pooled buffer and only a large one costs more. The read deadline is cleared on
// return.
func Read(c Conn, buf []byte, limit int, deadline time.Time) (name string, read []byte, err error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return "", nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	n := 0
	for {
		if n == len(buf) {
			if n >= limit {
				return "", buf[:n], ErrTooLarge
			}
			grown := make([]byte, min(2*max(n, 512), limit))
			copy(grown, buf[:n])
			buf = grown
		}
		m, rerr := c.Read(buf[n:])
		n += m
		if m > 0 {
			name, err = Parse(buf[:n])
			if !errors.Is(err, ErrShort) {
				return name, buf[:n], err
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return "", buf[:n], rerr
		}
	}
}
