package proxy

import (
	"net"
	"sync"

	"golang.org/x/sys/unix"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/proxyproto"
	pb "github.com/nullnet/nullnet/proto"
)

// PROXY protocol to upstream (send_proxy_protocol): a tcp service's upstream connection starts
// with a header carrying the client's address, a udp service's every datagram does.

// sendProxyFor is the version a new connection or session of m's service sends: the service's
// policy (send_proxy_protocol) as of now, read per use like every policy, so a change applies
// to new connections without touching the listener. m.Service is the routed service (for a
// TLS listener, the one the SNI named).
func (p *Proxy) sendProxyFor(m *Mapping) proxyproto.Version {
	return sendProxyVersion(p.servicePolicy(m.Service), m.Protocol)
}

// sendProxyVersion reads a policy's send_proxy_protocol for a protocol.
func sendProxyVersion(pol *pb.ServicePolicy, proto Protocol) proxyproto.Version {
	switch pol.GetSendProxyProtocol() {
	case pb.ProxyProtocolVersion_PROXY_PROTOCOL_V1:
		if proto == UDP {
			return proxyproto.V2 // v1 has no datagram form (the stack file is refused first)
		}
		return proxyproto.V1
	case pb.ProxyProtocolVersion_PROXY_PROTOCOL_V2:
		return proxyproto.V2
	}
	return proxyproto.None
}

// firstBytes reads what the client has sent so far, without waiting: nil when it has sent
// nothing yet (or closed: the relay sees the EOF again). An error is the client's reset. The
// buffer goes back to the pool with release (once).
func firstBytes(c *net.TCPConn) (b []byte, release func(), err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, func() {}, nil
	}
	bp := firstChunk.Get().(*[]byte)
	release = sync.OnceFunc(func() { firstChunk.Put(bp) })
	var n int
	var rerr error
	// Go's sockets are non-blocking: the read returns EAGAIN at once when nothing is there,
	// and returning true keeps rc.Read from waiting for more.
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), *bp)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case cerr != nil:
		return nil, release, cerr
	case rerr == unix.EAGAIN:
		return nil, release, nil
	case rerr != nil:
		return nil, release, rerr
	}
	return (*bp)[:max(n, 0)], release, nil
}

// headerBufs holds the buffers of header writes: header plus the client's early bytes.
var headerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// appendProxyHeader appends the PROXY header of version v (None: nothing) for the client of
// tc to b.
//
// A relay that reads the client's first bytes itself (TLS passthrough) calls p.readClient
// first (it reads a trusted load balancer's header); the client's stream is then tc.early
// followed by c (prefixedConn).
func appendProxyHeader(b []byte, v proxyproto.Version, tc tcpClient) []byte {
	if v == proxyproto.None {
		return b
	}
	return proxyproto.Append(b, v, proxyproto.Stream, tc.client, tc.local)
}

// writeProxyHeader writes what must precede the relay on a new upstream connection: the PROXY
// header of version v (None: none) for tc, the client bytes read with a received header, and
// more (a TLS listener's ClientHello). It is one write: the upstream gets the header before
// any client byte, in the same segment when they fit.
func writeProxyHeader(up net.Conn, v proxyproto.Version, tc tcpClient, more []byte) error {
	if v == proxyproto.None && len(tc.early) == 0 && len(more) == 0 {
		return nil
	}
	if v == proxyproto.None && len(tc.early) == 0 {
		_, err := up.Write(more) // no copy for the common TLS case
		return err
	}
	bp := headerBufs.Get().(*[]byte)
	b := appendProxyHeader((*bp)[:0], v, tc)
	b = append(b, tc.early...)
	b = append(b, more...)
	_, err := up.Write(b)
	if cap(b) <= 4<<10 {
		*bp = b[:0]
		headerBufs.Put(bp)
	}
	return err
}

// countHeadersSent adds n to the headers-sent metric of a listener and version.
func countHeadersSent(labels []metrics.Label, v proxyproto.Version, n uint64) {
	if n == 0 {
		return
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "proxy_protocol", "sent"}, float32(n),
		append(labels, metrics.Label{Name: "version", Value: v.String()}))
}
