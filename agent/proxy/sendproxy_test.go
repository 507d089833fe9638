package proxy

import (
	"net/netip"
	"testing"

	"github.com/nullnet/nullnet/agent/proxyproto"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// The policy's send_proxy_protocol reaches the mapping, and a change of it alone updates the
// listener in place (new connections and sessions get the new header).
func TestSendProxyFromPolicy(t *testing.T) {
	pol := func(v pb.ProxyProtocolVersion) *pb.ServicePolicy { return &pb.ServicePolicy{SendProxyProtocol: v} }
	b := &pb.PortMappingBundle{Mappings: []*pb.PortMapping{
		{Service: "a", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 1, Policy: pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V1)},
		{Service: "b", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 2, Policy: pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V2)},
		{Service: "c", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: 3, Policy: pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V2)},
		{Service: "d", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: 4, Policy: pol(pb.ProxyProtocolVersion_PROXY_PROTOCOL_V1)},
		{Service: "e", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 5},
	}}
	got, problems := desiredTable(b)
	if len(problems) != 0 {
		t.Fatal(problems)
	}
	for k, want := range map[listenerKey]proxyproto.Version{{TCP, 1}: proxyproto.V1, {TCP, 2}: proxyproto.V2,
		{UDP, 3}: proxyproto.V2, {UDP, 4}: proxyproto.V2, {TCP, 5}: proxyproto.None} {
		if got[k].SendProxy != want {
			t.Errorf("%v: SendProxy %v, want %v", k, got[k].SendProxy, want)
		}
	}
	running := map[listenerKey]Mapping{{TCP, 1}: got[listenerKey{TCP, 1}]}
	next := got[listenerKey{TCP, 1}]
	next.SendProxy = proxyproto.None
	if d := diffTable(running, map[listenerKey]Mapping{next.key(): next}); len(d.Update) != 1 || len(d.Open)+len(d.Close) != 0 {
		t.Fatalf("diff %+v: want one in-place update", d)
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
