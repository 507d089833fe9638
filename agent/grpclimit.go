package agent

import (
	"context"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// streamLimiter caps a server's concurrent gRPC calls (streams and unary calls) per peer
// address, across all of that peer's connections; grpc.MaxConcurrentStreams caps them per
// connection. Each call costs goroutines and buffers, so a peer opening streams without end
// (10,000 on one connection were once accepted: +10k goroutines, +120 MB) is refused with
// ResourceExhausted before any handler or authorizer runs.
type streamLimiter struct {
	max    int
	logger hclog.Logger
	logs   logThrottle

	mu     sync.Mutex
	byPeer map[string]int
}

func newStreamLimiter(max int, logger hclog.Logger) *streamLimiter {
	return &streamLimiter{max: max, logger: logger, byPeer: map[string]int{},
		logs: logThrottle{every: refusalLogEvery}}
}

func (l *streamLimiter) acquire(ctx context.Context, method string) (release func(), err error) {
	who := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		who = p.Addr.String()
		if host, _, err := net.SplitHostPort(who); err == nil {
			who = host
		}
	}
	l.mu.Lock()
	if l.byPeer[who] >= l.max {
		l.mu.Unlock()
		if ok, held := l.logs.allow(); ok {
			l.logger.Warn("gRPC call refused: too many concurrent calls from one address",
				"peer", who, "method", method, "limit", l.max, "refused_before", held, "per", refusalLogEvery.String())
		}
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s refused: %d concurrent calls from %s (limits.grpc_max_streams_per_client)", method, l.max, who)
	}
	l.byPeer[who]++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			if n := l.byPeer[who] - 1; n > 0 {
				l.byPeer[who] = n
			} else {
				delete(l.byPeer, who) // only peers with calls in flight are kept
			}
			l.mu.Unlock()
		})
	}, nil
}

// count is the number of calls in flight from a peer address.
func (l *streamLimiter) count(who string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byPeer[who]
}

func (l *streamLimiter) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		release, err := l.acquire(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		defer release()
		return h(ctx, req)
	}
}

func (l *streamLimiter) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		release, err := l.acquire(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		defer release()
		return h(srv, ss)
	}
}
