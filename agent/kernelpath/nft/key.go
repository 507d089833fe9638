package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Proto is an IP protocol number the kernel path carries.
type Proto uint8

const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Key selects the flows one entry DNATs: packets from Client to the proxy's Port over Proto.
type Key struct {
	Client netip.Addr
	Proto  Proto
	Port   uint16 // the proxy's listen port (destination port of the client's packets)
}

func (k Key) String() string {
	return fmt.Sprintf("%s/%s/%d", k.Client, k.Proto, k.Port)
}

// Entry is one map element: the flows of Key go to Target, their conntrack entries marked Mark.
type Entry struct {
	Key
	Target netip.AddrPort // the replica's overlay address and port
	Mark   uint32         // the net id; never 0 (0 is "no mark" to conntrack)
}

func (e Entry) String() string {
	return fmt.Sprintf("%s -> %s mark %d", e.Key, e.Target, e.Mark)
}

// Sizes of the concatenations. nftables pads every field of a concatenation to the 4-byte
// register size: ipv4_addr (4) . inet_proto (1+3) . inet_service (2+2), and the value
// ipv4_addr (4) . inet_service (2+2).
const (
	keyLen    = 12
	targetLen = 8
	markLen   = 4
)

func (k Key) validate() error {
	if !k.Client.Is4() {
		return fmt.Errorf("client %s: only IPv4 clients are supported", k.Client)
	}
	if k.Proto != TCP && k.Proto != UDP {
		return fmt.Errorf("protocol %d: only tcp and udp are supported", k.Proto)
	}
	if k.Port == 0 {
		return errors.New("port 0")
	}
	return nil
}

func (e Entry) validate() error {
	if err := e.Key.validate(); err != nil {
		return err
	}
	if !e.Target.Addr().Is4() || e.Target.Port() == 0 {
		return fmt.Errorf("target %s: need an IPv4 address and a port", e.Target)
	}
	if e.Mark == 0 {
		return errors.New("mark 0 (conntrack's \"unmarked\")")
	}
	return nil
}

// encodeKey lays a key out as the kernel compares it: address and port in network order.
func encodeKey(k Key) []byte {
	b := make([]byte, keyLen)
	a := k.Client.As4()
	copy(b[0:4], a[:])
	b[4] = byte(k.Proto)
	binary.BigEndian.PutUint16(b[8:10], k.Port)
	return b
}

func decodeKey(b []byte) (Key, error) {
	if len(b) != keyLen {
		return Key{}, fmt.Errorf("map key of %d bytes, want %d", len(b), keyLen)
	}
	if b[5] != 0 || b[6] != 0 || b[7] != 0 || b[10] != 0 || b[11] != 0 {
		return Key{}, fmt.Errorf("map key %x: non-zero padding", b)
	}
	k := Key{
		Client: netip.AddrFrom4([4]byte(b[0:4])),
		Proto:  Proto(b[4]),
		Port:   binary.BigEndian.Uint16(b[8:10]),
	}
	return k, k.validate()
}

func encodeTarget(t netip.AddrPort) []byte {
	b := make([]byte, targetLen)
	a := t.Addr().As4()
	copy(b[0:4], a[:])
	binary.BigEndian.PutUint16(b[4:6], t.Port())
	return b
}

func decodeTarget(b []byte) (netip.AddrPort, error) {
	if len(b) != targetLen {
		return netip.AddrPort{}, fmt.Errorf("map value of %d bytes, want %d", len(b), targetLen)
	}
	if b[6] != 0 || b[7] != 0 {
		return netip.AddrPort{}, fmt.Errorf("map value %x: non-zero padding", b)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[0:4])), binary.BigEndian.Uint16(b[4:6])), nil
}

// The ct mark is a host-order u32 in the kernel's register.
func encodeMark(m uint32) []byte {
	b := make([]byte, markLen)
	binary.NativeEndian.PutUint32(b, m)
	return b
}

func decodeMark(b []byte) (uint32, error) {
	if len(b) != markLen {
		return 0, fmt.Errorf("mark of %d bytes, want %d", len(b), markLen)
	}
	return binary.NativeEndian.Uint32(b), nil
}
