package server

import (
	"context"
	"errors"
	"net/netip"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/session"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// firstReplicaWait bounds how long a Proxy call waits for the first Consul answer about a
// service nobody asked for before (normally the watch runs from the moment it is defined).
const firstReplicaWait = 5 * time.Second

// Proxy resolves, and builds on demand, the upstream for one outside client. Each success
// opens one use of the session; the proxy ends it with ReleaseProxy.
func (i *ingressService) Proxy(ctx context.Context, req *pb.ProxyRequest) (*pb.ProxyResponse, error) {
	resp, err := i.s.plane.proxy(ctx, req)
	result := "success"
	switch {
	case err != nil:
		result = status.Code(err).String()
		i.s.events.Emit(events.Event{Kind: events.ProxyRequestRefused, Severity: events.Warning,
			Node: req.GetProxyNode(), Message: status.Convert(err).Message(),
			Fields: map[string]string{"service": req.GetService(), "client_ip": req.GetClientIp(), "code": result}})
	case resp.Reused:
		result = "reused"
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "proxy_requests"}, 1,
		[]metrics.Label{{Name: "result", Value: result}})
	return resp, err
}

func (p *plane) proxy(ctx context.Context, req *pb.ProxyRequest) (*pb.ProxyResponse, error) {
	if err := validateProxyRequest(req); err != nil {
		return nil, err
	}
	ip := netip.MustParseAddr(req.GetClientIp()) // validated above
	if _, version, _ := p.s.defs.All(); version == 0 {
		return nil, status.Error(codes.Unavailable, "the server has not read the stack definitions from Consul yet; retry shortly")
	}
	def, ok := p.s.defs.Get(req.Service)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "service %q is not defined in any stack", req.Service)
	}
	if !def.EntryPoint {
		return nil, status.Errorf(codes.FailedPrecondition,
			"service %q (stack %q) is a backend only: set a timeout on it to make it reachable through the proxy",
			def.Service, def.Stack)
	}
	key := session.Key{Service: req.Service, ClientIP: ip.String(), ProxyNode: req.ProxyNode}
	if req.GetAdopt() != nil {
		if resp := p.tryAdopt(ctx, req, key, def); resp != nil {
			return resp, nil
		}
	}
	if p.network == networkVXLAN && !p.usableNode(req.ProxyNode) {
		return nil, status.Errorf(codes.FailedPrecondition,
			"proxy node %q has no control channel to this server, so its end of the tunnel cannot be built; "+
				"check that its client role is connected", req.ProxyNode)
	}
	if p.replicas == nil {
		return nil, status.Error(codes.Unavailable, "this server has no Consul connection to find replicas")
	}
	if ready := p.replicas.ensure(req.Service); ready != nil {
		select {
		case <-ready:
		case <-time.After(firstReplicaWait):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	view := p.replicas.view(req.Service)
	if len(view.all) == 0 {
		p.replicas.confirmEmpty(ctx, req.Service)
		view = p.replicas.view(req.Service)
	}
	cands, why := view.candidates(p.usableNode)
	if len(cands) == 0 {
		if why == "" {
			why = "Consul has not answered yet"
		}
		return nil, status.Errorf(codes.Unavailable, "no healthy replica of %q: %s", req.Service, why)
	}
	res, err := p.table.Acquire(ctx, session.Request{
		Key:        key,
		Timeout:    def.Timeout,
		Candidates: cands,
	})
	if err != nil {
		return nil, proxyStatus(req.Service, err)
	}
	s := res.Session
	return &pb.ProxyResponse{UpstreamIp: s.UpstreamIP, UpstreamPort: uint32(s.UpstreamPort), SessionId: s.ID,
		LeaseId: res.LeaseID, NetId: s.NetID, Reused: res.Reused, ReplicaId: s.Replica.ID}, nil
}

// proxyStatus maps session errors to gRPC statuses.
func proxyStatus(service string, err error) error {
	switch {
	case errors.Is(err, session.ErrPoolExhausted):
		return status.Errorf(codes.ResourceExhausted, "%v; raise server.net_id_max or lower service timeouts", err)
	case errors.Is(err, session.ErrNoReplica):
		return status.Errorf(codes.Unavailable, "no healthy replica of %q", service)
	case errors.Is(err, errAckTimeout):
		return status.Errorf(codes.Unavailable, "building the tunnel for %q timed out (server.setup_timeout): %v", service, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, session.ErrClosed):
		return status.Error(codes.Unavailable, "the server is shutting down")
	default:
		return status.Errorf(codes.Unavailable, "building the tunnel for %q failed (rolled back): %v", service, err)
	}
}

// ReleaseProxy ends one use of a session.
func (i *ingressService) ReleaseProxy(_ context.Context, req *pb.ReleaseProxyRequest) (*pb.ReleaseProxyResponse, error) {
	if err := validateRelease(req); err != nil {
		return nil, err
	}
	if err := i.s.plane.table.Release(req.LeaseId, req.ProxyNode); err != nil {
		// Already released, or the session was torn down (which drops its leases): nothing to do,
		// but say so, so that a proxy bug that double-releases is visible.
		return nil, status.Errorf(codes.NotFound, "%v (already released, or its session was torn down)", err)
	}
	return &pb.ReleaseProxyResponse{}, nil
}
