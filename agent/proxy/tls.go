package proxy

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/sni"
)

// TLS passthrough: a tls listener is a TCP listener (tcp.go) whose connections first have
// their ClientHello read (bounded in size and time) to learn the server name; the connection
// then goes through the TCP relay path for the service of that name, and the bytes read are
// written to the upstream before the relay splices the rest. TLS is never terminated here.

// tlsHelloTimeout bounds how long a client may take to send its ClientHello; tlsHelloMax bounds
// how many bytes the proxy buffers for it (records and headers included). tlsHelloBuf is the
// pooled buffer a ClientHello is first read into: today's clients send 0.3-2 KiB (post-quantum
// key shares included), and a client that holds its connection open without sending should pin
// little memory; a larger hello moves to a buffer of its own, up to tlsHelloMax.
const (
	tlsHelloTimeout = 10 * time.Second
	tlsHelloMax     = sni.DefaultMaxHello
	tlsHelloBuf     = 4 << 10
)

// helloBufs are the ClientHello buffers, returned once the bytes reached the upstream.
var helloBufs = sync.Pool{New: func() any { b := make([]byte, tlsHelloBuf); return &b }}

// tlsGroup gathers the port table entries of one tls port (one per service).
type tlsGroup struct {
	names, stacks []string
	timeout       time.Duration
}

func (g *tlsGroup) add(m Mapping) {
	g.names = append(g.names, m.Service)
	if m.Stack != "" {
		g.stacks = append(g.stacks, m.Stack)
	}
	g.timeout = max(g.timeout, m.IdleTimeout)
}

// mapping is the port's one listener: Service lists every name once, sorted, and so does Stack;
// the idle timeout is the longest.
func (g *tlsGroup) mapping(port uint16) Mapping {
	join := func(s []string) string {
		slices.Sort(s)
		return strings.Join(slices.Compact(s), ",")
	}
	return Mapping{Protocol: TLS, Port: port, Service: join(g.names), Stack: join(g.stacks), IdleTimeout: g.timeout}
}

// tlsRoutes are the service names of a tls mapping (Mapping.Service).
func tlsRoutes(services string) []string {
	if services == "" {
		return nil
	}
	return strings.Split(services, ",")
}

// tlsRoute says whether name is one of the services of a tls mapping. Names are DNS names
// without commas, so a comma-bounded match is exact; the list is short and this allocates
// nothing.
func tlsRoute(services, name string) bool {
	for services != "" {
		var cur string
		cur, services, _ = strings.Cut(services, ",")
		if cur == name {
			return true
		}
	}
	return false
}

// routeTLS reads c's ClientHello and returns the mapping of the service its SNI names, with the
// bytes read (to be written to the upstream first; release hands the buffer back). When no
// service matches, c is closed, the refusal counted and (aggregated) reported, and ok is false.
func (p *Proxy) routeTLS(c *net.TCPConn, tc tcpClient, m *Mapping) (routed *Mapping, hello []byte, release func(), ok bool) {
	bp := helloBufs.Get().(*[]byte)
	release = func() { helloBufs.Put(bp) }
	// The client's stream starts with what came with a load balancer's PROXY header.
	name, read, err := sni.Read(&prefixedConn{TCPConn: c, early: tc.early}, *bp, tlsHelloMax,
		time.Now().Add(p.tlsHelloTimeout))
	reason := sni.Reason(err)
	if err == nil && !tlsRoute(m.Service, name) {
		reason = "unknown_sni"
	}
	if reason == "" {
		r := *m
		r.Service = name
		return &r, read, release, true
	}
	release()
	c.Close()
	if p.runCtx.Err() != nil {
		return nil, nil, nil, false // shutdown closed the connection: not the client's doing
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "tls", "unrouted"}, 1,
		[]metrics.Label{{Name: "port", Value: fmt.Sprint(m.Port)}, {Name: "reason", Value: reason}})
	client := tc.client
	if p.logger.IsDebug() {
		p.logger.Debug("tls connection not routed", "client", client.String(), "port", m.Port,
			"reason", reason, "server_name", fmt.Sprintf("%.80q", name), "error", err, "bytes_read", len(read))
	}
	// A connect-and-close (a port scan, a load balancer's TCP check) is counted, not reported:
	// it says nothing about routing.
	if reason == "incomplete" && len(read) == 0 {
		return nil, nil, nil, false
	}
	msg := fmt.Sprintf("tls connection on port %d closed: %s", m.Port, reason)
	if name != "" {
		msg = fmt.Sprintf("tls connection on port %d closed: no service named %.80q", m.Port, name)
	}
	p.events.Emit(events.Event{Kind: events.TLSConnectionUnrouted, Severity: events.Warning, Message: msg,
		Fields: map[string]string{"port": fmt.Sprint(m.Port), "reason": reason,
			"server_name": truncate(name, 80), "client_ip": client.Addr().String()}})
	return nil, nil, nil, false
}

// truncate bounds a peer-chosen string kept in an event.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
