package client

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Listening sockets come from a NETLINK_SOCK_DIAG dump filtered in the kernel to the states
// that matter: TCP_LISTEN for tcp (the kernel then walks only its listening hash, never the
// established and TIME_WAIT sockets a busy proxy host has thousands of) and TCP_CLOSE for udp
// (bound, unconnected sockets; a proxy's connected per-session sockets are skipped). Reading
// /proc/net/tcp instead cost a busy proxy a quarter of its CPU in the connection-rate bench.

const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

// inetDiagReq is struct inet_diag_req_v2.
type inetDiagReq struct {
	family, protocol uint8
	states           uint32
}

func (r *inetDiagReq) Len() int { return 56 }

func (r *inetDiagReq) Serialize() []byte {
	b := make([]byte, 56)
	b[0], b[1] = r.family, r.protocol
	binary.NativeEndian.PutUint32(b[4:8], r.states)
	// inet_diag_sockid: ports, addresses, interface and cookie stay zero (no filter); the
	// cookie must be INET_DIAG_NOCOOKIE (all ones) to match any socket.
	binary.NativeEndian.PutUint32(b[48:52], ^uint32(0))
	binary.NativeEndian.PutUint32(b[52:56], ^uint32(0))
	return b
}

// diagListeners dumps the sockets of proto ("tcp"|"udp") in the listening states, in the
// calling thread's network namespace.
func diagListeners(proto string) ([]socket, error) {
	ipproto, state := uint8(unix.IPPROTO_TCP), uint32(1<<tcpListen)
	if proto == "udp" {
		ipproto, state = unix.IPPROTO_UDP, 1<<tcpClose
	}
	var out []socket
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.AddData(&inetDiagReq{family: fam, protocol: ipproto, states: state})
		msgs, err := req.Execute(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY)
		if err != nil {
			return nil, fmt.Errorf("sock_diag %s dump: %w", proto, err)
		}
		for _, m := range msgs {
			if s, ok := parseDiagMsg(proto, m); ok {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// parseDiagMsg reads the local address of a struct inet_diag_msg.
func parseDiagMsg(proto string, m []byte) (socket, bool) {
	if len(m) < 72 {
		return socket{}, false
	}
	fam := m[0]
	port := int(binary.BigEndian.Uint16(m[4:6]))
	var addr netip.Addr
	switch fam {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(m[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(m[8:24])).Unmap()
	default:
		return socket{}, false
	}
	return socket{proto: proto, addr: addr, port: port}, true
}
