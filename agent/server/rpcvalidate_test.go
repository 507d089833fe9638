package server

import (
	"net/netip"
	"strings"
	"testing"

	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestValidateProxyRequest(t *testing.T) {
	cases := []struct {
		name string
		req  *pb.ProxyRequest
		want string // "" = valid
	}{
		{"valid", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "redis.internal", ProxyNode: "edge1"}, ""},
		{"ipv6 client", &pb.ProxyRequest{ClientIp: "2001:db8::1", Service: "web.com", ProxyNode: "edge1"}, ""},
		{"no service", &pb.ProxyRequest{ClientIp: "203.0.113.5", ProxyNode: "edge1"}, "service is required"},
		{"bad service", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "Bad Name!", ProxyNode: "edge1"}, "not a valid service name"},
		{"bad ip", &pb.ProxyRequest{ClientIp: "999.1.1.1", Service: "web.com", ProxyNode: "edge1"}, "not an IP address"},
		{"no proxy node", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "web.com"}, "proxy_node is required"},
		{"long proxy node", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "web.com", ProxyNode: strings.Repeat("a", 200)}, "not a node name"},
		{"bad protocol", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "web.com", ProxyNode: "e", Protocol: 9}, "protocol 9"},
		{"adopt ok", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "web.com", ProxyNode: "e",
			Adopt: &pb.AdoptUse{NetId: 101, UpstreamIp: "10.0.3.42", UpstreamPort: 6379}}, ""},
		{"adopt direct", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "web.com", ProxyNode: "e",
			Adopt: &pb.AdoptUse{UpstreamIp: "127.0.0.1", UpstreamPort: 6379}}, ""},
		{"adopt bad id", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "web.com", ProxyNode: "e",
			Adopt: &pb.AdoptUse{NetId: 7, UpstreamIp: "10.0.3.42", UpstreamPort: 6379}}, "adopt: net id 7"},
		{"adopt bad port", &pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "web.com", ProxyNode: "e",
			Adopt: &pb.AdoptUse{NetId: 101, UpstreamIp: "10.0.3.42", UpstreamPort: 70000}}, "upstream_port 70000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validateProxyRequest(tc.req)
			checkInvalid(t, err, tc.want)
		})
	}
}

func TestValidateHello(t *testing.T) {
	ok := &pb.Hello{NodeName: "node1", UnderlayAddr: "10.99.0.21", Roles: []string{"client"}}
	checkInvalid(t, validateHello(ok, true), "")
	checkInvalid(t, validateHello(nil, true), "must be a Hello")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n", UnderlayAddr: "x"}, true), "underlay_addr")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n", UnderlayAddr: "10.0.0.1", UnderlayMtu: 10}, true), "underlay_mtu")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n", UnderlayAddr: "10.0.0.1",
		ActiveEnds: []*pb.OverlayEndRef{{NetId: 5, Side: pb.OverlaySide_OVERLAY_SIDE_PROXY}}}, true), "net id 5 is out of range")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n"}, false), "")
	// Loopback's MTU (make dev, single-host tests).
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n", UnderlayAddr: "127.0.0.1", UnderlayMtu: 65536}, true), "")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n"}, true), "underlay_addr")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n", InstanceId: "0123abcd"}, false), "")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n", InstanceId: "bad id\n"}, false), "instance_id")
	checkInvalid(t, validateHello(&pb.Hello{NodeName: "n", InstanceId: strings.Repeat("a", 4096)}, false), "instance_id")
	checkInvalid(t, validateEvent(&pb.AgentEvent{Kind: "Bad-Kind"}), "snake_case")
	checkInvalid(t, validateEvent(&pb.AgentEvent{Kind: "tcp_listener_bind_failed", Node: "edge1"}), "")
	checkInvalid(t, validateAck(&pb.CommandAck{CommandId: ""}), "command_id is required")
}

func checkInvalid(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("want valid, got %v", err)
		}
		return
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), want) {
		t.Fatalf("want InvalidArgument containing %q, got %v", want, err)
	}
}

// FuzzServerMessages: any bytes a peer sends, decoded as each message the server accepts, are
// validated without crashing, and whatever passes validation is safe to act on.
func FuzzServerMessages(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.ProxyRequest{ClientIp: "203.0.113.5", Service: "redis.internal", ProxyNode: "edge1", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP},
		&pb.ReleaseProxyRequest{LeaseId: "l-1", ProxyNode: "edge1"},
		&pb.WatchPortMappingsRequest{ProxyNode: "edge1"},
		&pb.NodeMessage{Msg: &pb.NodeMessage_Hello{Hello: &pb.Hello{NodeName: "n1", UnderlayAddr: "10.0.0.1",
			ActiveEnds: []*pb.OverlayEndRef{{NetId: 101, Side: pb.OverlaySide_OVERLAY_SIDE_SERVICE}}}}},
		&pb.NodeMessage{Msg: &pb.NodeMessage_Ack{Ack: &pb.CommandAck{CommandId: "c1", Error: "boom"}}},
		&pb.AgentEvent{Kind: "tcp_listener_bind_failed", Severity: pb.Severity_SEVERITY_ERROR, Fields: map[string]string{"port": "80"}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var pr pb.ProxyRequest
		if proto.Unmarshal(b, &pr) == nil && validateProxyRequest(&pr) == nil {
			if _, err := netip.ParseAddr(pr.ClientIp); err != nil || pr.ProxyNode == "" {
				t.Fatalf("accepted %v", &pr)
			}
		}
		var rel pb.ReleaseProxyRequest
		if proto.Unmarshal(b, &rel) == nil {
			_ = validateRelease(&rel)
		}
		var w pb.WatchPortMappingsRequest
		if proto.Unmarshal(b, &w) == nil {
			_ = validateWatch(&w)
		}
		var nm pb.NodeMessage
		if proto.Unmarshal(b, &nm) == nil {
			if h := nm.GetHello(); h != nil && validateHello(h, true) == nil {
				for _, e := range h.ActiveEnds {
					if e.NetId < 101 {
						t.Fatalf("accepted net id %d", e.NetId)
					}
				}
			}
			if a := nm.GetAck(); a != nil {
				_ = validateAck(a)
			}
		}
		var ev pb.AgentEvent
		if proto.Unmarshal(b, &ev) == nil {
			_ = validateEvent(&ev)
		}
	})
}
