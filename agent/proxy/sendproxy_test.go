package proxy

import (
	"net/netip"
	"testing"

	"github.com/nullnet/nullnet/agent/proxyproto"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// ppMapping is a mapping whose service sends PROXY headers of version v.
type ppMapping struct {
	Mapping
	v proxyproto.Version
}

// applyPP pushes a bundle as a server would: the mappings, with each service's
// send_proxy_protocol in its policy (PortMapping.policy).
func (tp *testProxy) applyPP(version uint64, ms ...ppMapping) {
	b := &pb.PortMappingBundle{Version: version}
	for _, m := range ms {
		e := &pb.PortMapping{Service: m.Service, ListenPort: uint32(m.Port), Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP}
		switch m.Protocol {
		case UDP:
			e.Protocol = pb.ServiceProtocol_SERVICE_PROTOCOL_UDP
		case TLS: // one entry per service: the proxy groups a port's tls services
			e.Protocol = pb.ServiceProtocol_SERVICE_PROTOCOL_TLS
		}
		if m.v != proxyproto.None {
			e.Policy = &pb.ServicePolicy{SendProxyProtocol: pb.ProxyProtocolVersion(m.v)}
		}
		b.Mappings = append(b.Mappings, e)
	}
	tp.applyBundle(b)
}

// The policy's send_proxy_protocol is what new connections send, per protocol, and a change of
// it is seen at once (read per use).
func TestSendProxyFromPolicy(t *testing.T) {
	pol := func(v pb.ProxyProtocolVersion) *pb.ServicePolicy { return &pb.ServicePolicy{SendProxyProtocol: v} }
	for _, tc := range []struct {
		pol   *pb.ServicePolicy
		proto Protocol
		want  proxyproto.Version
	}{
		{nil, TCP, proxyproto.None},
		{&pb.ServicePolicy{}, TCP, proxyproto.None},
		{pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V1), TCP, proxyproto.V1},
		{pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V2), TCP, proxyproto.V2},
		{pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V2), UDP, proxyproto.V2},
		{pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V1), UDP, proxyproto.V2},
		{pol(7), TCP, proxyproto.None},
	} {
		if got := sendProxyVersion(tc.pol, tc.proto); got != tc.want {
			t.Errorf("%v %s: %v, want %v", tc.pol, tc.proto, got, tc.want)
		}
	}
	tp := startProxy(t, newTestResolver(), nil)
	m := &Mapping{Protocol: TCP, Port: freePort(t), Service: "db"}
	tp.applyPP(1, ppMapping{*m, proxyproto.V1})
	if got := tp.sendProxyFor(m); got != proxyproto.V1 {
		t.Fatalf("after v1: %v", got)
	}
	tp.applyPP(2, ppMapping{*m, proxyproto.None})
	if got := tp.sendProxyFor(m); got != proxyproto.None {
		t.Fatalf("after removing it: %v", got)
	}
}

// proxy.proxy_protocol_from decides whose headers are read; a reload replaces the list.
func TestSendsProxyHeader(t *testing.T) {
	c := config.Default()
	c.Proxy.ProxyProtocolFrom = []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"}
	s := settingsFrom(c)
	for _, tc := range []struct {
		addr string
		want bool
	}{{"10.1.2.3", true}, {"11.0.0.1", false}, {"192.0.2.7", true}, {"192.0.2.8", false},
		{"2001:db8::1", true}, {"2001:db9::1", false}, {"127.0.0.1", false}} {
		if got := s.sendsProxyHeader(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.addr, got, tc.want)
		}
	}
	if settingsFrom(config.Default()).sendsProxyHeader(netip.MustParseAddr("10.1.2.3")) {
		t.Error("the default (empty) list trusts a peer")
	}
}
