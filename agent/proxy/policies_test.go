package proxy

import (
	"io"
	"testing"
	"time"

	pb "github.com/nullnet/nullnet/proto"
)

// TestPolicyChangeKeepsListenerAndConnections: bundles that differ only in a service's policy
// swap what servicePolicy and httpService answer, and neither rebind the listener nor touch a
// connection relayed through it.
func TestPolicyChangeKeepsListenerAndConnections(t *testing.T) {
	res := newTestResolver()
	up := tcpUpstream(t, echo)
	res.set("db", addrOf(t, up.Addr()))
	tp := startProxy(t, res, nil)
	port := freePort(t)
	bundle := func(v uint64, pol *pb.ServicePolicy, httpPol *pb.ServicePolicy) *pb.PortMappingBundle {
		return &pb.PortMappingBundle{Version: v,
			Mappings: []*pb.PortMapping{{Service: "db", Stack: "s", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP,
				ListenPort: uint32(port), IdleTimeoutSecs: 60, Policy: pol}},
			HttpServices: []*pb.PortMapping{{Service: "www.example.com", Stack: "s", Policy: httpPol}}}
	}
	if tp.servicePolicy("db") != nil {
		t.Fatal("a policy before any bundle")
	}
	tp.applyBundle(bundle(1, nil, nil))
	tp.waitListening(t, TCP, port)
	before, _ := tp.listener(TCP, port)
	if tp.servicePolicy("db") != nil {
		t.Fatal("policy for a service without one")
	}
	if m, ok := tp.httpService("WWW.example.com:8080"); !ok || m.GetPolicy() != nil {
		t.Fatalf("httpService = %v %v", m, ok)
	}

	c := dialProxy(t, port)
	defer c.Close()
	echoOnce := func(msg string) {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: %q %v", msg, buf, err)
		}
	}
	echoOnce("before")

	tp.applyBundle(bundle(2, &pb.ServicePolicy{CloseOnUnhealthy: true, Allow: []string{"10.0.0.0/8"}},
		&pb.ServicePolicy{HttpsRedirect: true}))
	if p := tp.servicePolicy("db"); !p.GetCloseOnUnhealthy() || len(p.GetAllow()) != 1 {
		t.Fatalf("servicePolicy after the change = %v", p)
	}
	if m, ok := tp.httpService("www.example.com."); !ok || !m.GetPolicy().GetHttpsRedirect() {
		t.Fatalf("httpService after the change = %v %v", m, ok)
	}
	if tp.servicePolicy("www.example.com") == nil {
		t.Fatal("http service policy not indexed by service")
	}
	after, _ := tp.listener(TCP, port)
	if !after.Since.Equal(before.Since) || after.State != "listening" || after.Failures != 0 {
		t.Fatalf("listener touched by a policy change: before %+v after %+v", before, after)
	}
	echoOnce("after") // the same connection still relays

	tp.applyBundle(bundle(3, nil, nil))
	if tp.servicePolicy("db") != nil {
		t.Fatal("removed policy still served")
	}
	echoOnce("removed")
	if issued, _ := res.counts(); issued != 1 {
		t.Fatalf("%d resolutions: the connection was re-established", issued)
	}
}
