package proxy

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	"github.com/nullnet/nullnet/lib/retry"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// close_on_unhealthy: the server streams the replicas Consul marks critical, of the services
// whose policy asks for it (WatchUnhealthyReplicas: the full set at once, then after every
// change). Each use (TCP connection, UDP session) carries the replica id its Proxy call
// returned; every set received ends the uses that run to a replica in it, so that their
// clients reconnect and the server picks a healthy replica. A set is state, not a command: a
// stream that reconnects delivers the current one, and a use cut off from it keeps running
// until the next set (the server tears the session down on its side anyway).

// maxReplicaID bounds a replica id taken from the server ("<consul node>/<service id>").
const maxReplicaID = 512

// maxUnhealthy bounds the entries of one set a proxy applies (a hostile or broken server).
const maxUnhealthy = 100_000

// watchUnhealthy keeps a WatchUnhealthyReplicas stream open until ctx ends. A server that does
// not implement it (older) is asked again at the slowest backoff, quietly.
func (p *Proxy) watchUnhealthy(ctx context.Context) {
	client := pb.NewIngressClient(p.cfg.Conn)
	backoff := watchBackoffMin
	for ctx.Err() == nil {
		got, err := p.watchUnhealthyOnce(ctx, client)
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff = watchBackoffMin
		}
		if status.Code(err) == codes.Unimplemented {
			backoff = watchBackoffMax
			p.logger.Debug("server does not stream unhealthy replicas; close_on_unhealthy is off until it does")
		} else {
			p.logger.Warn("unhealthy replicas stream lost; reconnecting", "error", err, "retry_in", backoff)
		}
		if !retry.Sleep(ctx, retry.Jitter(backoff, 0.2)) {
			return
		}
		backoff = min(backoff*2, watchBackoffMax)
	}
}

func (p *Proxy) watchUnhealthyOnce(ctx context.Context, client pb.IngressClient) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchUnhealthyReplicas(sctx, &pb.WatchUnhealthyReplicasRequest{ProxyNode: p.cfg.Agent.NodeName})
	if err != nil {
		return false, err
	}
	return recvStream(ctx, stream.Recv, func(set *pb.UnhealthyReplicas, _ bool) { p.applyUnhealthy(set) })
}

// replicaKey names one replica of one service.
type replicaKey struct{ service, replica string }

// applyUnhealthy ends every use that runs to a replica in set, and emits one event per replica
// with the counts.
func (p *Proxy) applyUnhealthy(set *pb.UnhealthyReplicas) {
	bad := map[string]map[string]bool{}
	for i, r := range set.GetReplicas() {
		if i == maxUnhealthy {
			p.logger.Warn("unhealthy replicas set too large; the rest is ignored", "version", set.GetVersion(),
				"entries", len(set.GetReplicas()), "applied", maxUnhealthy)
			break
		}
		if !config.ValidServiceName(r.GetService()) || r.GetReplicaId() == "" || len(r.GetReplicaId()) > maxReplicaID {
			continue
		}
		if bad[r.GetService()] == nil {
			bad[r.GetService()] = map[string]bool{}
		}
		bad[r.GetService()][r.GetReplicaId()] = true
	}
	p.logger.Debug("unhealthy replicas received", "version", set.GetVersion(), "replicas", len(set.GetReplicas()))
	if len(bad) == 0 {
		return
	}
	// Collect under the lock, end outside it: ending a use takes the lock again (endUse).
	var victims []*liveUse
	p.uses.mu.Lock()
	for k, head := range p.uses.byKey {
		ids := bad[k.service]
		if ids == nil {
			continue
		}
		for u := head; u != nil; u = u.next {
			if u.closeFn != nil && ids[u.replica] {
				victims = append(victims, u)
			}
		}
	}
	p.uses.mu.Unlock()
	type counts struct{ tcp, udp, http int }
	closed := map[replicaKey]*counts{}
	count := func(k replicaKey) *counts {
		c := closed[k]
		if c == nil {
			c = &counts{}
			closed[k] = c
		}
		return c
	}
	for _, h := range p.httpUses.matching(bad) {
		h.cancel()
		count(replicaKey{h.service, h.replica}).http++
	}
	for _, u := range victims {
		if u.killed.Swap(true) {
			continue // ended by an earlier set, still on its way out
		}
		u.closeFn()
		c := count(replicaKey{u.service, u.replica})
		if u.proto == UDP {
			c.udp++
		} else {
			c.tcp++
		}
	}
	for k, c := range closed {
		p.logger.Info("ended connections to a replica Consul marks critical", "service", k.service, "replica", k.replica,
			"tcp_connections", c.tcp, "udp_sessions", c.udp, "http_requests", c.http)
		labels := []metrics.Label{{Name: "service", Value: k.service}}
		metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "unhealthy_closed"}, float32(c.tcp+c.udp+c.http), labels)
		p.events.Emit(events.Event{Kind: events.ConnectionsClosedUnhealthy, Severity: events.Warning,
			Message: "connections to " + k.replica + " ended: Consul marks it critical (close_on_unhealthy)",
			Fields: map[string]string{"service": k.service, "replica": k.replica,
				"tcp_connections": strconv.Itoa(c.tcp), "udp_sessions": strconv.Itoa(c.udp),
				"http_requests": strconv.Itoa(c.http)}})
	}
}

// httpUse is one HTTP request (or upgraded connection) of a close_on_unhealthy service.
type httpUse struct {
	service, replica string
	cancel           func()
	killed           atomic.Bool
}

// httpUseSet holds the HTTP requests that may have to be ended. Only requests of services
// with close_on_unhealthy enter it, so the others pay nothing.
type httpUseSet struct {
	mu sync.Mutex
	m  map[*httpUse]struct{}
}

// track adds a request and returns the function that removes it.
func (s *httpUseSet) track(service, replica string, cancel func()) func() {
	h := &httpUse{service: service, replica: replica, cancel: cancel}
	s.mu.Lock()
	if s.m == nil {
		s.m = map[*httpUse]struct{}{}
	}
	s.m[h] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.m, h)
		s.mu.Unlock()
	}
}

// matching returns the requests to a replica in bad not ended before, marking them ended.
func (s *httpUseSet) matching(bad map[string]map[string]bool) []*httpUse {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*httpUse
	for h := range s.m {
		if bad[h.service][h.replica] && !h.killed.Swap(true) {
			out = append(out, h)
		}
	}
	return out
}
