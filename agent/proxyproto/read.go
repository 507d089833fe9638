package proxyproto

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// Reasons a header from a trusted peer is rejected (the metric label "reason": a fixed set).
const (
	ReasonTimeout = "timeout" // no complete header within the read deadline
	ReasonMissing = "missing" // the peer's first bytes are not a PROXY header
	ReasonInvalid = "invalid" // a header that does not parse, or is longer than allowed
	ReasonClosed  = "closed"  // the peer closed or reset before a whole header
)

// Reasons lists every reject reason, for metrics that are pre-declared.
var Reasons = []string{ReasonTimeout, ReasonMissing, ReasonInvalid, ReasonClosed}

// Error is a rejected header: Reason is one of the Reason* constants.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return "PROXY header " + e.Reason + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Header is what a received header says.
type Header struct {
	// Source is the client's address and Dest the address it reached the load balancer on.
	// Both are invalid when Local is set.
	Source, Dest netip.AddrPort
	// Local: the header carries no client (v2 LOCAL, v1 UNKNOWN, or an address family other
	// than IPv4/IPv6): the load balancer's own connection, e.g. a health check. The peer's
	// address stands for the client.
	Local bool
}

// readerPool holds the buffered readers of header reads in flight. The buffer is the library's
// minimum: a v1 header fits, a v2 one is read through it.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 256) }}

// Read reads the header c must start with, waiting at most timeout for it. It returns the header
// and the bytes the peer sent after it in the same reads (the client's first bytes, which the
// caller forwards before anything else). A v2 header's address block and TLVs are bounded by the
// library's MaxV2HeaderSize (4 KiB), a v1 header by its 107 bytes. The read deadline is cleared
// on success.
func Read(c net.Conn, timeout time.Duration) (Header, []byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Header{}, nil, &Error{Reason: ReasonClosed, Err: err}
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c)
	h, err := pp.Read(br)
	var rest []byte
	if err == nil {
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			rest = append([]byte(nil), b...)
		}
	}
	br.Reset(nil)
	readerPool.Put(br)
	if err != nil {
		return Header{}, nil, classify(err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return Header{}, nil, &Error{Reason: ReasonClosed, Err: err}
	}
	return fromLibrary(h), rest, nil
}

// ParseDatagram reads the v2 (or v1) header a datagram from a trusted peer must start with and
// returns it with the offset of the payload.
func ParseDatagram(d []byte) (Header, int, error) {
	h, payload, err := pp.ParseUDPDatagram(d)
	if err != nil {
		e := classify(err)
		if e.Reason != ReasonMissing { // a datagram ends where it ends: a short one is invalid
			e.Reason = ReasonInvalid
		}
		return Header{}, 0, e
	}
	return fromLibrary(h), len(d) - len(payload), nil
}

func classify(err error) *Error {
	var ne net.Error
	switch {
	case errors.Is(err, pp.ErrNoProxyProtocol):
		return &Error{Reason: ReasonMissing, Err: err}
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return &Error{Reason: ReasonTimeout, Err: err}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrClosed):
		return &Error{Reason: ReasonClosed, Err: err}
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return &Error{Reason: ReasonClosed, Err: err}
	}
	return &Error{Reason: ReasonInvalid, Err: err}
}

func fromLibrary(h *pp.Header) Header {
	if h.Command != pp.PROXY {
		return Header{Local: true}
	}
	src, dst := addrPort(h.SourceAddr), addrPort(h.DestinationAddr)
	if !src.IsValid() || !dst.IsValid() {
		return Header{Local: true}
	}
	return Header{Source: src, Dest: dst}
}

func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.TCPAddr:
		ap = v.AddrPort()
	case *net.UDPAddr:
		ap = v.AddrPort()
	default:
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
