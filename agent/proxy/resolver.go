package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Protocol of a listener or a use.
type Protocol string

const (
	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
	HTTP Protocol = "http"
	// TLS is TLS passthrough: a TCP listener routing by SNI (tls.go).
	TLS Protocol = "tls"
)

func (p Protocol) proto() pb.ServiceProtocol {
	switch p {
	case TCP:
		return pb.ServiceProtocol_SERVICE_PROTOCOL_TCP
	case UDP:
		return pb.ServiceProtocol_SERVICE_PROTOCOL_UDP
	case TLS:
		return pb.ServiceProtocol_SERVICE_PROTOCOL_TLS
	default:
		return pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP
	}
}

// Lease is one successful resolution: where to send the client's traffic, and the use the
// server opened for it. Every Lease must be handed to Resolver.Release exactly once.
type Lease struct {
	Upstream  netip.AddrPort
	LeaseID   string
	SessionID string
	NetID     uint32
	Reused    bool
	// ReplicaID is the replica the session runs to (close_on_unhealthy, unhealthy.go).
	ReplicaID string

	share *share // set when the lease stands for a share's (share.go)
}

// Resolver turns (client, service) into an upstream. The relays depend on this interface only,
// so their logic is testable without a server; the production implementation is grpcResolver.
type Resolver interface {
	// Resolve asks for an upstream. Errors wrap one of ErrUnknownService, ErrNotEntryPoint,
	// ErrNoReplica when the server said so.
	Resolve(ctx context.Context, client netip.Addr, service string, proto Protocol) (Lease, error)
	// Release ends the use. It never blocks the caller on the network.
	Release(Lease)
}

// Resolution failures the data path tells apart (HTTP status pages, metrics, events).
var (
	errNoAdopter      = errors.New("resolver cannot re-announce uses")
	ErrUnknownService = errors.New("unknown service")
	ErrNotEntryPoint  = errors.New("service is not an entry point")
	ErrNoReplica      = errors.New("no healthy replica")
)

// failureKind names a resolution error for metrics labels.
func failureKind(err error) string {
	switch {
	case errors.Is(err, ErrUnknownService):
		return "unknown_service"
	case errors.Is(err, ErrNotEntryPoint):
		return "not_entry_point"
	case errors.Is(err, ErrNoReplica):
		return "no_replica"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "lookup_timeout"
	default:
		return "lookup_failed"
	}
}

// A release is retried (capped backoff) for up to releaseRetryFor, which covers a server
// restart or a leader change; past that the server's own cleanup of a gone proxy node's uses
// is the backstop.
const (
	releaseRetryFor = 2 * time.Minute
	releaseTimeout  = 5 * time.Second
	resolveTimeout  = 30 * time.Second
)

// grpcResolver implements Resolver with the Ingress service.
type grpcResolver struct {
	client pb.IngressClient
	node   string
	logger hclog.Logger

	// Releases run in their own goroutines, owned by the resolver: ctx bounds them and wg lets
	// Close wait for in-flight releases after the data path has stopped.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// closing is closed when the proxy stops: releases are then sent once each, all at once,
	// never retried (a stop must not spend seconds retrying a server that is itself going
	// away), and failures are counted into one log line (closeFailed) instead of one each.
	closing     chan struct{}
	closeOnce   sync.Once
	closeFailed atomic.Int64
}

func newGRPCResolver(conn grpc.ClientConnInterface, node string, logger hclog.Logger) *grpcResolver {
	ctx, cancel := context.WithCancel(context.Background())
	return &grpcResolver{client: pb.NewIngressClient(conn), node: node, logger: logger, ctx: ctx, cancel: cancel,
		closing: make(chan struct{})}
}

func (r *grpcResolver) Resolve(ctx context.Context, client netip.Addr, service string, proto Protocol) (Lease, error) {
	return r.call(ctx, &pb.ProxyRequest{ClientIp: client.String(), Service: service,
		ProxyNode: r.node, Protocol: proto.proto()})
}

// Adopt re-announces a live use (see adopt.go).
func (r *grpcResolver) Adopt(ctx context.Context, client netip.Addr, service string, proto Protocol, netID uint32,
	upstream netip.AddrPort) (Lease, error) {
	return r.call(ctx, &pb.ProxyRequest{ClientIp: client.String(), Service: service,
		ProxyNode: r.node, Protocol: proto.proto(), Adopt: &pb.AdoptUse{NetId: netID,
			UpstreamIp: upstream.Addr().String(), UpstreamPort: uint32(upstream.Port())}})
}

func (r *grpcResolver) call(ctx context.Context, req *pb.ProxyRequest) (Lease, error) {
	service := req.Service
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	resp, err := r.client.Proxy(ctx, req)
	if err != nil {
		return Lease{}, classify(service, err)
	}
	ip, perr := netip.ParseAddr(resp.UpstreamIp)
	if perr != nil || resp.UpstreamPort == 0 || resp.UpstreamPort > 65535 {
		// The server gave us a use we cannot take: give it back at once.
		r.Release(Lease{LeaseID: resp.LeaseId})
		return Lease{}, fmt.Errorf("server returned an invalid upstream %q port %d for %s",
			resp.UpstreamIp, resp.UpstreamPort, service)
	}
	replica := resp.GetReplicaId()
	if len(replica) > maxReplicaID {
		replica = "" // never matched: such a use is simply not closed on ill health
	}
	return Lease{Upstream: netip.AddrPortFrom(ip.Unmap(), uint16(resp.UpstreamPort)), LeaseID: resp.LeaseId,
		SessionID: resp.SessionId, NetID: resp.NetId, Reused: resp.Reused, ReplicaID: replica}, nil
}

// classify maps the server's status codes onto the errors the data path distinguishes.
func classify(service string, err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return serverSaid(ErrUnknownService, service, err)
	case codes.FailedPrecondition:
		return serverSaid(ErrNotEntryPoint, service, err)
	case codes.Unavailable:
		return serverSaid(ErrNoReplica, service, err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("resolving %q: %w", service, context.DeadlineExceeded)
	default:
		return fmt.Errorf("resolving %q: %w", service, err)
	}
}

// resolveError is a failure the server explained: it reads as the server's message alone when
// that message already names the service (it says "no healthy replica of "x": why"; prefixing
// the sentinel printed the cause twice), and matches its sentinel with errors.Is.
type resolveError struct {
	kind error
	msg  string
}

func (e *resolveError) Error() string { return e.msg }
func (e *resolveError) Unwrap() error { return e.kind }

func serverSaid(kind error, service string, err error) error {
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, strconv.Quote(service)) {
		msg = fmt.Sprintf("%v for %q: %s", kind, service, msg)
	}
	return &resolveError{kind: kind, msg: msg}
}

// Release sends ReleaseProxy in the background, retrying transient failures a few times.
func (r *grpcResolver) Release(l Lease) {
	if l.LeaseID == "" {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		backoff := 200 * time.Millisecond
		giveUp := time.Now().Add(releaseRetryFor)
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(r.ctx, releaseTimeout)
			_, err := r.client.ReleaseProxy(ctx, &pb.ReleaseProxyRequest{LeaseId: l.LeaseID, ProxyNode: r.node})
			cancel()
			if err == nil {
				return
			}
			// NotFound: the server already forgot the use (e.g. it restarted); nothing to retry.
			if status.Code(err) == codes.NotFound {
				// The server forgot the use: it restarted (a re-announced use's old lease) or
				// the session was torn down. Nothing to give back.
				r.logger.Debug("use already unknown to the server", "lease", l.LeaseID, "error", err)
				return
			}
			if r.isClosing() {
				metrics.IncrCounter([]string{"nullnet", "proxy", "release", "failed"}, 1)
				r.closeFailed.Add(1)
				return
			}
			if code := status.Code(err); code == codes.InvalidArgument ||
				time.Now().After(giveUp) || r.ctx.Err() != nil {
				metrics.IncrCounter([]string{"nullnet", "proxy", "release", "failed"}, 1)
				r.logger.Warn("could not release use", "lease", l.LeaseID, "attempts", attempt, "error", err)
				return
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-r.closing: // one last attempt, together with every other release of the stop
			case <-r.ctx.Done():
			}
			t.Stop()
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

func (r *grpcResolver) isClosing() bool {
	select {
	case <-r.closing:
		return true
	default:
		return false
	}
}

// beginClose switches releases to the stop mode (one attempt each, no retry); the proxy calls
// it before ending its connections, so their releases go out as one concurrent batch.
func (r *grpcResolver) beginClose() { r.closeOnce.Do(func() { close(r.closing) }) }

// Close waits up to grace for releases in flight, then abandons the rest (the server ends a
// gone proxy's uses itself), and logs one line for every release that failed.
func (r *grpcResolver) Close(grace time.Duration) {
	r.beginClose()
	start := time.Now()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	t := time.NewTimer(grace)
	select {
	case <-done:
	case <-t.C:
		r.cancel()
		<-done
	}
	t.Stop()
	r.cancel()
	if n := r.closeFailed.Load(); n > 0 {
		r.logger.Warn("uses not released at stop; the server ends them when this proxy goes away",
			"failed", n, "took", time.Since(start).Round(time.Millisecond))
	}
}
