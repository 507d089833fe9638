// Package proxyproto writes and reads PROXY protocol headers (HAProxy's proxy-protocol.txt, v1
// text and v2 binary): the proxy writes one before the first byte of an upstream TCP connection,
// or on every datagram of a UDP session, so that the upstream sees the client's address; it
// reads one from the front load balancers it trusts (proxy.proxy_protocol_from).
//
// Headers are written here by hand: it is one append of a few fixed fields per connection, on
// the hot path, where the library's formatter builds net.Addr values and a buffer each time
// (BenchmarkAppend). Reading uses github.com/pires/go-proxyproto; FuzzAppend checks every
// header written here against its parser.
package proxyproto

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// Version is the PROXY protocol version a service sends upstream; None sends nothing.
type Version uint8

const (
	None Version = 0
	V1   Version = 1
	V2   Version = 2
)

// String is the stack file's spelling ("v1", "v2", "" for none).
func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return ""
}

// ParseVersion reads a stack file's send_proxy_protocol value.
func ParseVersion(s string) (Version, error) {
	switch s {
	case "":
		return None, nil
	case "v1":
		return V1, nil
	case "v2":
		return V2, nil
	}
	return None, fmt.Errorf("unknown PROXY protocol version %q (want \"v1\" or \"v2\")", s)
}

// sigV2 starts every v2 header.
var sigV2 = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// MaxV1 is the longest v1 header (the specification's bound, CRLF included).
const MaxV1 = 107

// Transport is the client's transport, written in the header.
type Transport uint8

const (
	Stream   Transport = iota // TCP
	Datagram                  // UDP (v2 only)
)

// pair returns src and dst in one address family: v1 and v2 carry a single family, and a
// dual-stack listener can see an IPv4 client (unmapped here) on an IPv6 local address. When the
// families still differ after unmapping, the IPv4 one is written in its IPv4-mapped IPv6 form.
func pair(src, dst netip.AddrPort) (netip.Addr, netip.Addr) {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() != d.Is4() {
		if s.Is4() {
			s = netip.AddrFrom16(s.As16())
		} else {
			d = netip.AddrFrom16(d.As16())
		}
	}
	return s.WithZone(""), d.WithZone("")
}

// Append appends the header of version v (V1 or V2) for a client at src that reached dst to b.
// V1 has no datagram form: a Datagram V1 request writes a V2 header (config rejects it first).
// An invalid src or dst writes a header that carries no address (v1 "UNKNOWN", v2 LOCAL), as
// the specification asks of a sender that does not know them.
func Append(b []byte, v Version, t Transport, src, dst netip.AddrPort) []byte {
	if v == V1 && t == Stream {
		return AppendV1(b, src, dst)
	}
	return AppendV2(b, t, src, dst)
}

// AppendV1 appends a v1 (text) header: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n".
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	if !src.IsValid() || !dst.IsValid() {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	s, d := pair(src, dst)
	if s.Is4() {
		b = append(b, "PROXY TCP4 "...)
	} else {
		b = append(b, "PROXY TCP6 "...)
	}
	b = s.AppendTo(b)
	b = append(b, ' ')
	b = d.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, '\r', '\n')
}

// AppendV2 appends a v2 (binary) header without TLVs.
func AppendV2(b []byte, t Transport, src, dst netip.AddrPort) []byte {
	b = append(b, sigV2[:]...)
	if !src.IsValid() || !dst.IsValid() {
		// Version 2, LOCAL; family UNSPEC; no address block.
		return append(b, 0x20, 0x00, 0, 0)
	}
	s, d := pair(src, dst)
	proto := byte(0x1) // STREAM
	if t == Datagram {
		proto = 0x2
	}
	b = append(b, 0x21) // version 2, PROXY
	if s.Is4() {
		b = append(b, 0x10|proto, 0, 12)
		s4, d4 := s.As4(), d.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, 0x20|proto, 0, 36)
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}
