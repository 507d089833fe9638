package proxy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/proxyproto"
	"github.com/nullnet/nullnet/config"
)

// The client's address. A connection or datagram from a front load balancer listed in
// proxy.proxy_protocol_from starts with a PROXY protocol header, and the address it carries is
// the client's everywhere: the Proxy RPC's client_ip (sessions, stickiness), allow-lists and
// limits, logs, events and X-Forwarded-For. Every path takes it from here: readClient for TCP,
// (*udpListener).fromPeer for UDP, ppListener for the HTTP router. A peer not in the list is a
// client itself: a header it sends is not read, the bytes go upstream as data.

// proxyHeaderTimeout bounds how long a trusted peer may take to send its header. A load balancer
// writes it at once, before any client byte; the bound is for a peer that sends nothing.
const proxyHeaderTimeout = 5 * time.Second

// trustedPrefixes compiles proxy.proxy_protocol_from (validated with the configuration) into
// the allow-lists' matcher: a binary search per connection and datagram, whatever the list's
// length, and IPv4-mapped peers matched as IPv4. Nil when the list is empty.
func trustedPrefixes(c *config.Config) *edgepolicy.Matcher {
	ps, _ := config.ParsePrefixes(c.Proxy.ProxyProtocolFrom)
	if len(ps) == 0 {
		return nil
	}
	return edgepolicy.NewMatcher(ps)
}

// sendsProxyHeader reports whether the peer at a is a front load balancer whose connections and
// datagrams start with a PROXY header.
func (s *settings) sendsProxyHeader(a netip.Addr) bool {
	return s.ProxyProtocolFrom.Contains(a)
}

// tcpClient is an accepted TCP connection with the address of the client behind it.
type tcpClient struct {
	// client is the client's address: the PROXY header's source for a trusted peer, else the
	// peer's own address. local is the address the client connected to (the header's
	// destination, else the proxy's side of the socket): written in a PROXY header upstream.
	client, local netip.AddrPort
	// peer is the socket's remote end (the load balancer when viaHeader).
	peer      netip.AddrPort
	viaHeader bool
	// early holds client bytes read with the header: they go upstream first.
	early []byte
}

// readClient tells who is behind an accepted connection, reading the PROXY header that a trusted
// peer must send first (with a deadline). An error means the peer was trusted and its header
// missing or invalid: the caller closes the connection (counted here by reason).
func (p *Proxy) readClient(c *net.TCPConn, proto Protocol) (tcpClient, error) {
	peer := addrPortOf(c.RemoteAddr())
	local := addrPortOf(c.LocalAddr())
	if !p.settings().sendsProxyHeader(peer.Addr()) {
		return tcpClient{client: peer, local: local, peer: peer}, nil
	}
	h, early, err := proxyproto.Read(c, proxyHeaderTimeout)
	if err != nil {
		p.headerRejected(proto, peer, err)
		return tcpClient{client: peer, local: local, peer: peer}, err
	}
	tc := tcpClient{client: peer, local: local, peer: peer, viaHeader: true, early: early}
	if !h.Local { // LOCAL: the balancer's own connection (a health check); it is the client
		tc.client, tc.local = h.Source, h.Dest
	}
	return tc, nil
}

// headerRejected counts a trusted peer's missing or invalid header (reason: a fixed set) and
// logs one line every headerLogEvery at most, with the count since the last one.
func (p *Proxy) headerRejected(proto Protocol, peer netip.AddrPort, err error) {
	reason := proxyproto.ReasonInvalid
	if e, ok := err.(*proxyproto.Error); ok {
		reason = e.Reason
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "proxy_protocol", "rejected"}, 1,
		[]metrics.Label{{Name: "protocol", Value: string(proto)}, {Name: "reason", Value: reason}})
	n := p.headerRejects.Add(1)
	now := time.Now().UnixNano()
	last := p.headerLogAt.Load()
	if now-last < int64(headerLogEvery) || !p.headerLogAt.CompareAndSwap(last, now) {
		return
	}
	p.logger.Warn("PROXY header from a trusted peer missing or invalid; connection closed or datagram dropped",
		"peer", peer.String(), "protocol", proto, "reason", reason, "error", err,
		"rejected_since_last_line", n-p.headerLogged.Swap(n))
}

// headerLogEvery spaces the log lines of rejected headers (a broken balancer sends many).
const headerLogEvery = 10 * time.Second

// ppListener reads the PROXY header of the HTTP router's connections from trusted peers. The
// header is read on the connection's own goroutine (http.Server asks for RemoteAddr there), never
// in Accept, so one slow peer does not hold up the others.
type ppListener struct {
	net.Listener
	p *Proxy
}

func (l ppListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok || !l.p.settings().sendsProxyHeader(addrPortOf(c.RemoteAddr()).Addr()) {
		return c, nil
	}
	return &ppConn{prefixedConn: prefixedConn{TCPConn: tc}, p: l.p}, nil
}

// ppConn is a trusted peer's connection: RemoteAddr is the client's once the header is read; a
// missing or invalid header makes every Read fail, and the server closes the connection.
type ppConn struct {
	prefixedConn
	p      *Proxy
	once   sync.Once
	client tcpClient
	err    error
	// readDeadline is the deadline the server set before the header was read (the TLS
	// handshake's): reading the header clears the socket's, so it is put back.
	readDeadline time.Time
}

func (c *ppConn) init() {
	c.once.Do(func() {
		c.client, c.err = c.p.readClient(c.TCPConn, "http")
		c.early = c.client.early
		if c.err == nil && !c.readDeadline.IsZero() {
			_ = c.TCPConn.SetReadDeadline(c.readDeadline)
		}
	})
}

func (c *ppConn) SetDeadline(t time.Time) error {
	c.readDeadline = t
	return c.TCPConn.SetDeadline(t)
}

func (c *ppConn) SetReadDeadline(t time.Time) error {
	c.readDeadline = t
	return c.TCPConn.SetReadDeadline(t)
}

func (c *ppConn) RemoteAddr() net.Addr {
	c.init()
	return net.TCPAddrFromAddrPort(c.client.client)
}

func (c *ppConn) Read(b []byte) (int, error) {
	c.init()
	if c.err != nil {
		// EOF, not the error: net/http closes without answering (it would answer 400 to
		// anything else), as the TCP listeners do. The rejection is counted and logged already.
		return 0, io.EOF
	}
	return c.prefixedConn.Read(b)
}

// fromPeer takes datagrams [from, to) of b from a trusted front load balancer: each must start
// with a PROXY header (v2, or v1 as the library reads it); the header is cut off and the
// datagram goes to the session of the peer address, whose client is the first header's source.
// A datagram without a valid header is dropped and counted.
func (l *udpListener) fromPeer(ctx context.Context, peer netip.AddrPort, b *datagramBatch, from, to int) {
	for i := from; i < to; i++ {
		d := b.data(i)
		h, n, err := proxyproto.ParseDatagram(d)
		if err != nil {
			l.p.headerRejected(UDP, peer, err)
			continue
		}
		copy(d, d[n:])
		b.msgs[i].n -= uint32(n)
		client, local := peer, netip.AddrPort{}
		if !h.Local {
			client, local = h.Source, h.Dest
		}
		l.fromClient(ctx, peer, client, local, b, i, i+1)
	}
}

// prefixedConn reads early (bytes already read from the connection, e.g. with a PROXY header)
// before the connection itself: what a relay that parses the client's first bytes (the TLS
// ClientHello) reads through after readClient.
type prefixedConn struct {
	*net.TCPConn
	early []byte
}

func (c *prefixedConn) Read(b []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(b, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.TCPConn.Read(b)
}
