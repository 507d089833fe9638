package agent

import (
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/tlsutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// grpcServerOptions secures a server's gRPC listener: TLS when a certificate is configured and,
// with verify_incoming, the per-node authority checks of tlsutil.Authorizer.
func (a *Agent) grpcServerOptions() ([]grpc.ServerOption, error) {
	a.streams = newStreamLimiter(a.cfg.Limits.GRPCMaxStreamsPerClient, a.logger.Named("grpc"))
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(4 << 20),
		// Streams per connection are refused at the HTTP/2 level; calls per peer address across
		// its connections by the limiter, before the authorizer, so unauthenticated floods are
		// bounded too.
		grpc.MaxConcurrentStreams(uint32(a.cfg.Limits.GRPCMaxConcurrentStreams)),
		grpc.ChainUnaryInterceptor(a.streams.unary()),
		grpc.ChainStreamInterceptor(a.streams.stream()),
		// Agents ping every 10 s while idle; allow it rather than closing their connections.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 15 * time.Second, Timeout: 5 * time.Second}),
	}
	tc, authz, err := tlsutil.GRPCServerConfig(a.cfg.TLS, a.cfg.Datacenter, func(method, node, peer, reason string) {
		// Through the aggregator: one event (and log line) per peer and reason per interval.
		a.refusals.Emit(events.Event{Kind: events.AuthRefused, Severity: events.Warning, Node: node,
			Message: reason, Fields: map[string]string{"method": method, "peer": peer, "reason": reason}})
	})
	if err != nil {
		return nil, err
	}
	if tc == nil {
		return opts, nil
	}
	opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	if authz != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(authz.Unary()), grpc.ChainStreamInterceptor(authz.Stream()))
	}
	return opts, nil
}

// grpcClientCreds is how client and proxy agents dial servers (nil = plaintext).
func (a *Agent) grpcClientCreds() (credentials.TransportCredentials, error) {
	tc, err := tlsutil.ClientConfig(a.cfg.TLS, a.cfg.Datacenter)
	if err != nil || tc == nil {
		return nil, err
	}
	return credentials.NewTLS(tc), nil
}
