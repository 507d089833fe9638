package tlsutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authorizer enforces "authority follows identity" on a server's gRPC API when verify_incoming
// is on: the caller's certificate names its node and roles; a node may only speak as itself, and
// only proxy certificates may use the Ingress service.
type Authorizer struct {
	Datacenter string
	// Roots verifies callers' certificates. The gRPC listener asks for any certificate and leaves
	// verification to the Authorizer, so that a foreign or missing certificate is a gRPC status
	// and an event instead of a silent handshake failure.
	Roots *x509.CertPool
	// OnRefuse is told about every refusal with the caller's address (the server turns it into
	// an aggregated event: callers can be refused as fast as they can call).
	OnRefuse func(method, node, peer, reason string)
}

type identityKey struct{}

// IdentityFrom returns the verified caller identity a handler runs under, if TLS established one.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// methodRole is the role each RPC requires.
var methodRole = map[string]string{
	pb.Ingress_WatchPortMappings_FullMethodName:      RoleProxy,
	pb.Ingress_Proxy_FullMethodName:                  RoleProxy,
	pb.Ingress_ReleaseProxy_FullMethodName:           RoleProxy,
	pb.Ingress_WatchCertificates_FullMethodName:      RoleProxy,
	pb.Ingress_WatchUnhealthyReplicas_FullMethodName: RoleProxy,
	pb.Control_ControlChannel_FullMethodName:         RoleClient,
	pb.Control_ReportEvent_FullMethodName:            "", // any nullnet node
}

// peerAddr is the caller's IP address, for refusals.
func peerAddr(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

func (a *Authorizer) identify(ctx context.Context, method string) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, a.refuse(method, "", "", codes.Unauthenticated, "no peer information")
	}
	from := peerAddr(ctx)
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return Identity{}, a.refuse(method, "", from, codes.Unauthenticated, "a client certificate signed by the CA is required")
	}
	certs := ti.State.PeerCertificates
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: a.Roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Identity{}, a.refuse(method, "", from, codes.Unauthenticated,
			fmt.Sprintf("client certificate %q is not signed by the CA: %v", certs[0].Subject.CommonName, err))
	}
	id, err := IdentityOf(certs[0], a.Datacenter)
	if err != nil {
		return Identity{}, a.refuse(method, "", from, codes.PermissionDenied, err.Error())
	}
	role, known := methodRole[method]
	if !known {
		return Identity{}, a.refuse(method, id.Node, from, codes.PermissionDenied, "method not allowed")
	}
	if role == "" && !id.IsNode() {
		return Identity{}, a.refuse(method, id.Node, from, codes.PermissionDenied,
			fmt.Sprintf("%s's certificate is an operator's (cli), not a node's", id.Node))
	}
	if role != "" && !id.Has(role) {
		return Identity{}, a.refuse(method, id.Node, from, codes.PermissionDenied,
			fmt.Sprintf("node %s's certificate lacks the %s role", id.Node, role))
	}
	return id, nil
}

func (a *Authorizer) refuse(method, node, from string, code codes.Code, reason string) error {
	if a.OnRefuse != nil {
		a.OnRefuse(method, node, from, reason)
	}
	return status.Errorf(code, "%s refused: %s", method, reason)
}

// checkNode makes a message's self-declared node agree with the certificate: an empty field
// is filled in, a different one is refused.
func (a *Authorizer) checkNode(method, from string, id Identity, field *string, what string) error {
	if *field == "" {
		*field = id.Node
		return nil
	}
	if *field != id.Node {
		return a.refuse(method, id.Node, from, codes.PermissionDenied,
			fmt.Sprintf("%s %q does not match the certificate's node %q", what, *field, id.Node))
	}
	return nil
}

func (a *Authorizer) checkMessage(method, from string, id Identity, m any) error {
	switch r := m.(type) {
	case *pb.ProxyRequest:
		return a.checkNode(method, from, id, &r.ProxyNode, "proxy_node")
	case *pb.ReleaseProxyRequest:
		return a.checkNode(method, from, id, &r.ProxyNode, "proxy_node")
	case *pb.WatchPortMappingsRequest:
		return a.checkNode(method, from, id, &r.ProxyNode, "proxy_node")
	case *pb.WatchUnhealthyReplicasRequest:
		return a.checkNode(method, from, id, &r.ProxyNode, "proxy_node")
	case *pb.WatchCertificatesRequest:
		return a.checkNode(method, from, id, &r.ProxyNode, "proxy_node")
	case *pb.AgentEvent:
		return a.checkNode(method, from, id, &r.Node, "node")
	case *pb.NodeMessage:
		if h := r.GetHello(); h != nil {
			return a.checkNode(method, from, id, &h.NodeName, "hello.node_name")
		}
	}
	return nil
}

// Unary is the unary interceptor.
func (a *Authorizer) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		id, err := a.identify(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if err := a.checkMessage(info.FullMethod, peerAddr(ctx), id, req); err != nil {
			return nil, err
		}
		return h(context.WithValue(ctx, identityKey{}, id), req)
	}
}

// Stream is the stream interceptor; every received message is checked.
func (a *Authorizer) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		id, err := a.identify(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return h(srv, &checkedStream{ServerStream: ss, a: a, id: id, method: info.FullMethod,
			ctx: context.WithValue(ss.Context(), identityKey{}, id)})
	}
}

type checkedStream struct {
	grpc.ServerStream
	a      *Authorizer
	id     Identity
	method string
	ctx    context.Context
}

func (s *checkedStream) Context() context.Context { return s.ctx }

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.a.checkMessage(s.method, peerAddr(s.ServerStream.Context()), s.id, m)
}

// GRPCServerConfig is the tls.Config for a server's gRPC listener together with the Authorizer
// that must guard it when verify_incoming is on (nil when it is off). nil, nil when TLS is off.
func GRPCServerConfig(c config.TLS, dc string, onRefuse func(method, node, peer, reason string)) (*tls.Config, *Authorizer, error) {
	tc, err := ServerConfig(c)
	if err != nil || tc == nil {
		return nil, nil, err
	}
	if !c.VerifyIncoming {
		return tc, nil, nil
	}
	roots := tc.ClientCAs
	tc.ClientCAs = nil
	tc.ClientAuth = tls.RequestClientCert
	return tc, &Authorizer{Datacenter: dc, Roots: roots, OnRefuse: onRefuse}, nil
}
