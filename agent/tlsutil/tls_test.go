package tlsutil

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// pki writes a CA and certificates to a temp dir and returns TLS configs for named holders.
type pki struct {
	dir string
	ca  *CA
}

func newPKI(t *testing.T) *pki {
	ca, err := CreateCA("dc1", 1)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: t.TempDir(), ca: ca}
	os.WriteFile(filepath.Join(p.dir, "ca.pem"), ca.CertPEM, 0o644)
	return p
}

func (p *pki) issue(t *testing.T, role, node string) config.TLS {
	cert, key, err := p.ca.Issue(CertRequest{Role: role, Node: node, Datacenter: "dc1", Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := filepath.Join(p.dir, role+"-"+node+".pem")
	k := filepath.Join(p.dir, role+"-"+node+"-key.pem")
	os.WriteFile(c, cert, 0o644)
	os.WriteFile(k, key, 0o600)
	return config.TLS{CAFile: filepath.Join(p.dir, "ca.pem"), CertFile: c, KeyFile: k,
		VerifyIncoming: true, VerifyOutgoing: true, VerifyServerHostname: true}
}

// recorder implements just enough of the services to tell "let through" from "refused".
type recorder struct {
	pb.UnimplementedIngressServer
	pb.UnimplementedControlServer
	mu    sync.Mutex
	hello []string
}

func (r *recorder) Proxy(ctx context.Context, req *pb.ProxyRequest) (*pb.ProxyResponse, error) {
	id, _ := IdentityFrom(ctx)
	return &pb.ProxyResponse{SessionId: id.Node + "/" + req.ProxyNode}, nil
}

func (r *recorder) ControlChannel(s grpc.BidiStreamingServer[pb.NodeMessage, pb.ServerMessage]) error {
	m, err := s.Recv()
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.hello = append(r.hello, m.GetHello().GetNodeName())
	r.mu.Unlock()
	return s.Send(&pb.ServerMessage{Msg: &pb.ServerMessage_Welcome{Welcome: &pb.Welcome{ServerName: "s1"}}})
}

func startServer(t *testing.T, p *pki, refused *[]string) string {
	srvTLS := p.issue(t, RoleServer, "ctl1")
	var mu sync.Mutex
	tc, authz, err := GRPCServerConfig(srvTLS, "dc1", func(method, node, peer, reason string) {
		mu.Lock()
		*refused = append(*refused, method+" "+node+": "+reason)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)),
		grpc.ChainUnaryInterceptor(authz.Unary()), grpc.ChainStreamInterceptor(authz.Stream()))
	rec := &recorder{}
	pb.RegisterIngressServer(g, rec)
	pb.RegisterControlServer(g, rec)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return l.Addr().String()
}

func dial(t *testing.T, addr string, c config.TLS) *grpc.ClientConn {
	tc, err := ClientConfig(c, "dc1")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func proxyCall(cc *grpc.ClientConn, node string) (*pb.ProxyResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pb.NewIngressClient(cc).Proxy(ctx, &pb.ProxyRequest{ClientIp: "203.0.113.9", Service: "redis", ProxyNode: node})
}

func TestMutualTLSAuthority(t *testing.T) {
	p := newPKI(t)
	var refused []string
	addr := startServer(t, p, &refused)

	t.Run("proxy certificate may call Proxy as itself", func(t *testing.T) {
		resp, err := proxyCall(dial(t, addr, p.issue(t, RoleProxy, "edge1")), "")
		if err != nil {
			t.Fatalf("Proxy: %v", err)
		}
		if resp.SessionId != "edge1/edge1" {
			t.Fatalf("proxy_node must be taken from the certificate, got %q", resp.SessionId)
		}
	})
	t.Run("proxy certificate cannot speak for another node", func(t *testing.T) {
		_, err := proxyCall(dial(t, addr, p.issue(t, RoleProxy, "edge1")), "edge2")
		wantCode(t, err, codes.PermissionDenied, `proxy_node "edge2" does not match`)
	})
	t.Run("client certificate cannot call Proxy", func(t *testing.T) {
		_, err := proxyCall(dial(t, addr, p.issue(t, RoleClient, "node1")), "")
		wantCode(t, err, codes.PermissionDenied, "lacks the proxy role")
	})
	t.Run("no certificate is refused", func(t *testing.T) {
		c := p.issue(t, RoleClient, "node1")
		c.CertFile, c.KeyFile = "", ""
		_, err := proxyCall(dial(t, addr, c), "")
		wantCode(t, err, codes.Unauthenticated, "client certificate signed by the CA is required")
	})
	t.Run("certificate from another CA is refused", func(t *testing.T) {
		other := newPKI(t)
		c := other.issue(t, RoleProxy, "edge1")
		c.CAFile = p.issue(t, RoleProxy, "x").CAFile // trusts our server, but its own cert is foreign
		_, err := proxyCall(dial(t, addr, c), "")
		wantCode(t, err, codes.Unauthenticated, "not signed by the CA")
	})
	t.Run("agent refuses a server certificate that is not a server's", func(t *testing.T) {
		// A proxy certificate presented as a server: stand up a listener with it.
		fake := p.issue(t, RoleProxy, "mallory")
		fake.VerifyIncoming = false
		tc, _ := ServerConfig(fake)
		g := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
		pb.RegisterIngressServer(g, &recorder{})
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		go g.Serve(l)
		defer g.Stop()
		_, err := proxyCall(dial(t, l.Addr().String(), p.issue(t, RoleProxy, "edge1")), "")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("want a certificate verification error, got %v", err)
		}
	})
	t.Run("node A cannot open the control channel as node B", func(t *testing.T) {
		cc := dial(t, addr, p.issue(t, RoleClient, "nodeA"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := pb.NewControlClient(cc).ControlChannel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Hello{Hello: &pb.Hello{NodeName: "nodeB"}}})
		_, err = stream.Recv()
		wantCode(t, err, codes.PermissionDenied, `hello.node_name "nodeB" does not match`)
	})
	t.Run("node A opens its own control channel", func(t *testing.T) {
		cc := dial(t, addr, p.issue(t, RoleClient, "nodeA"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := pb.NewControlClient(cc).ControlChannel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Hello{Hello: &pb.Hello{NodeName: "nodeA"}}})
		m, err := stream.Recv()
		if err != nil || m.GetWelcome() == nil {
			t.Fatalf("want a welcome, got %v %v", m, err)
		}
	})
	t.Run("operator certificate has no gRPC authority", func(t *testing.T) {
		cc := dial(t, addr, p.issue(t, RoleCLI, "alice"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pb.NewControlClient(cc).ReportEvent(ctx, &pb.AgentEvent{Kind: "x"})
		wantCode(t, err, codes.PermissionDenied, "operator's (cli), not a node's")
	})
	if len(refused) != 6 {
		t.Fatalf("every refusal must be reported; got %v", refused)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("want %s containing %q, got %v", code, msg, err)
	}
}

func TestIdentityOf(t *testing.T) {
	ca, _ := CreateCA("dc1", 1)
	for _, tc := range []struct {
		role  string
		roles []string
	}{{RoleServer, []string{"server"}}, {RoleClient, []string{"client"}}, {RoleProxy, []string{"client", "proxy"}},
		{RoleCLI, []string{"cli"}}} {
		certPEM, keyPEM, err := ca.Issue(CertRequest{Role: tc.role, Node: "n1", Datacenter: "dc1"})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tlsX509(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		id, err := IdentityOf(pair, "dc1")
		if err != nil || id.Node != "n1" || len(id.Roles) != len(tc.roles) {
			t.Fatalf("%s: %+v %v", tc.role, id, err)
		}
		for _, r := range tc.roles {
			if !id.Has(r) {
				t.Errorf("%s: missing role %s", tc.role, r)
			}
		}
		if _, err := IdentityOf(pair, "dc2"); err == nil {
			t.Errorf("%s: a dc1 certificate must prove nothing in dc2", tc.role)
		}
	}
	if _, _, err := ca.Issue(CertRequest{Role: RoleClient, Node: "a.b", Datacenter: "dc1"}); err == nil {
		t.Error("a dotted node name must be refused")
	}
}
