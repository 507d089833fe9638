package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/server/session"
	pb "github.com/nullnet/nullnet/proto"
)

// adoptWait bounds how long a Proxy call with adopt waits for the nodes of its tunnel to
// reconnect and report their ends (after a server restart the proxy's stream and the nodes'
// control channels come back in any order). The proxy re-announces in the background, so
// waiting costs no client anything.
const adoptWait = 10 * time.Second

// helloSettle covers the moment between a node's channel being registered and its reported
// ends being noted.
const helloSettle = 2 * time.Second

// adoptPoll re-checks the replicas while waiting (the orphans wake the wait themselves).
const adoptPoll = 250 * time.Millisecond

// tryAdopt turns the live use a proxy re-announced into a session without building anything:
// the orphaned tunnel it relays over (vxlan) or the replica it is connected to (direct). It
// returns nil when adoption is impossible; the call is then answered like any Proxy call and
// the proxy keeps relaying on the old tunnel until the orphan is removed.
func (p *plane) tryAdopt(ctx context.Context, req *pb.ProxyRequest, key session.Key, def Definition) *pb.ProxyResponse {
	a := req.GetAdopt()
	log := p.logger.With("service", key.Service, "client_ip", key.ClientIP, "proxy_node", key.ProxyNode,
		"net_id", a.GetNetId(), "upstream", fmt.Sprintf("%s:%d", a.GetUpstreamIp(), a.GetUpstreamPort()))
	if _, ok := p.table.Lookup(key); ok {
		return nil // the server knows the session (a stream blip, not a restart): the use joins it
	}
	if p.replicas == nil {
		return nil
	}
	if ready := p.replicas.ensure(req.Service); ready != nil {
		select {
		case <-ready:
		case <-time.After(firstReplicaWait):
		case <-ctx.Done():
			return nil
		}
	}
	// Waiting for nodes only makes sense shortly after a restart; later an id that is no
	// orphan will not become one, and the call may be a new connection's.
	if time.Since(p.started) > p.s.agentConfig().Server.OrphanGrace {
		res, why, _ := p.adoptOnce(key, def, a)
		if res == nil {
			log.Debug("cannot adopt the live use; answering like a new request", "reason", why)
			return nil
		}
		return adopted(log, res)
	}
	wait := time.NewTimer(adoptWait)
	defer wait.Stop()
	tick := time.NewTicker(adoptPoll)
	defer tick.Stop()
	for {
		res, why, changed := p.adoptOnce(key, def, a)
		if res != nil {
			return adopted(log, res)
		}
		if changed == nil {
			log.Info("cannot adopt the live use; answering like a new request", "reason", why)
			return nil
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-wait.C:
			log.Info("cannot adopt the live use; answering like a new request (the proxy keeps relaying "+
				"on the old tunnel until it is removed)", "reason", why)
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func adopted(log hclog.Logger, res *session.Result) *pb.ProxyResponse {
	s := res.Session
	log.Info("session adopted", "session", s.ID, "replica", s.Replica.ID)
	return &pb.ProxyResponse{UpstreamIp: s.UpstreamIP, UpstreamPort: uint32(s.UpstreamPort), SessionId: s.ID,
		LeaseId: res.LeaseID, NetId: s.NetID, Reused: true, ReplicaId: s.Replica.ID}
}

// adoptOnce makes one attempt. When it fails for a reason that may go away (a node has not
// reported its end yet, no matching healthy replica yet), changed is non-nil and wakes at
// the next orphan change.
func (p *plane) adoptOnce(key session.Key, def Definition, a *pb.AdoptUse) (res *session.Result, why string, changed <-chan struct{}) {
	cands, _ := p.replicas.view(key.Service).candidates(p.usableNode)
	port := int(a.GetUpstreamPort())
	if p.network == networkDirect {
		for _, c := range cands {
			if c.Address == a.GetUpstreamIp() && c.Port == port {
				r, err := p.table.Adopt(session.AdoptRequest{Key: key, Timeout: def.Timeout, Replica: c,
					Upstream: session.Upstream{IP: c.Address, Port: c.Port}})
				if err != nil {
					return nil, err.Error(), nil
				}
				return &r, "", nil
			}
		}
		return nil, "no healthy replica has this address and port", nil
	}
	up, err := overlay.Upstream(a.GetNetId())
	if err != nil || up.String() != a.GetUpstreamIp() {
		return nil, "the upstream is not the net id's service bridge address", nil
	}
	proxyNode, svcNode, ok, changed := p.orphans.lookup(a.GetNetId())
	// The proxy node reports its ends in its Hello: once it is connected (and the Hello
	// handled, which follows the connect within moments), an end it did not report will not
	// appear, so there is nothing to wait for.
	var proxyPending <-chan struct{}
	if info, known := p.nodes.node(key.ProxyNode); !known || !info.Connected || time.Since(info.Since) < helloSettle {
		proxyPending = changed
	}
	switch {
	case !ok:
		return nil, "the net id is not an orphaned tunnel", proxyPending
	case proxyNode == "":
		return nil, "the proxy node has not reported its end", proxyPending
	case proxyNode != key.ProxyNode:
		return nil, fmt.Sprintf("the tunnel's proxy end is on node %q", proxyNode), nil
	case svcNode == "":
		return nil, "the service node has not reported its end (yet)", changed
	}
	var rep *session.Replica
	for _, c := range cands {
		if c.Node == svcNode && c.Port == port {
			rep = &c
			break
		}
	}
	if rep == nil {
		return nil, fmt.Sprintf("node %q has no healthy replica of the service on port %d", svcNode, port), changed
	}
	or, ok := p.orphans.claim(a.GetNetId())
	if !ok {
		return nil, "the orphan was just removed or adopted", nil
	}
	r, err := p.table.Adopt(session.AdoptRequest{Key: key, Timeout: def.Timeout, Replica: *rep, NetID: a.GetNetId(),
		Upstream: session.Upstream{IP: a.GetUpstreamIp(), Port: port}})
	if err != nil {
		p.restoreOrphan(a.GetNetId(), or)
		if errors.Is(err, session.ErrSessionExists) {
			return nil, "a session was built for this client meanwhile", nil
		}
		return nil, err.Error(), nil
	}
	return &r, "", nil
}
