package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/servicepolicy"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/protobuf/proto"
)

// Client policies (allow/deny lists, per-client limits, max_sessions) of the services in the
// port table, glued to the TCP accept path, the UDP new-session path and the HTTP router. Each
// service's policy is compiled once per port table that changes it (edgepolicy.Compile), never
// per connection; a service's open-connection counts survive policy changes. A refused client
// costs no Proxy call and no tunnel.

// The client address of a TCP or tls connection is readClient's (clientaddr.go): the peer's,
// or a trusted front load balancer's PROXY header's; UDP sessions get it the same way
// (fromPeer), HTTP requests through the router's connections (ppListener).

// clientOfRequest is the client address of an HTTP request (its connection's, as readClient
// gave it; the server copies it into RemoteAddr); 0.0.0.0:0 when unreadable.
func clientOfRequest(r *http.Request) netip.AddrPort {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// edgeTable maps services to their admission state; it is replaced, never changed, so the
// per-connection lookup is one atomic load and one map read.
type edgeTable struct {
	svcs map[string]*edgeService
}

type edgeService struct {
	*edgepolicy.Service
	src *pb.ServicePolicy // the policy the current rules were compiled from
}

// specOf is the part of a ServicePolicy the edge policy enforces.
func specOf(sp *pb.ServicePolicy) edgepolicy.Spec {
	return edgepolicy.Spec{Allow: sp.GetAllow(), Deny: sp.GetDeny(),
		MaxConnectionsPerClient: int(min(sp.GetMaxConnectionsPerClient(), 1<<30)),
		RatePerSecond:           sp.GetNewConnectionsPerClientRate(),
		Burst:                   int(min(sp.GetNewConnectionsPerClientBurst(), 1<<30)),
		MaxSessions:             int(min(sp.GetMaxSessions(), 1<<30))}
}

// updatePolicies applies the client policies of a pushed table: services whose policy did not
// change keep their compiled rules; a policy that does not compile (a hostile or buggy server)
// is logged and the service keeps its previous rules. Services that left the table stay while
// they have open connections, with no rules, so that their counts are right if they return.
func (p *Proxy) updatePolicies(ix *servicepolicy.Index) {
	p.edgeMu.Lock()
	defer p.edgeMu.Unlock()
	old := p.edge.Load()
	next := &edgeTable{svcs: map[string]*edgeService{}}
	var problems int
	for name, sp := range ix.All() {
		if specOf(sp).IsZero() {
			continue
		}
		cur := old.lookup(name)
		if cur != nil && cur.src != nil && proto.Equal(cur.src, sp) {
			next.svcs[name] = cur
			continue
		}
		rules, err := edgepolicy.Compile(specOf(sp))
		if err != nil {
			if problems++; problems <= 10 {
				p.logger.Error("client policy not applied; keeping the previous one", "service", fmt.Sprintf("%.80q", name), "error", err)
			}
			if cur != nil {
				next.svcs[name] = cur
			}
			continue
		}
		if cur == nil {
			cur = &edgeService{Service: edgepolicy.NewService()}
		} else {
			cur = &edgeService{Service: cur.Service} // the counts carry over
		}
		cur.src = sp
		cur.SetRules(rules)
		next.svcs[name] = cur
		p.logger.Info("client policy applied", "service", name, "allow", len(sp.GetAllow()), "deny", len(sp.GetDeny()),
			"max_connections_per_client", sp.GetMaxConnectionsPerClient(),
			"new_connections_per_client", sp.GetNewConnectionsPerClientRate(),
			"burst", sp.GetNewConnectionsPerClientBurst(), "max_sessions", sp.GetMaxSessions())
	}
	if old != nil {
		for name, s := range old.svcs {
			if _, ok := next.svcs[name]; ok {
				continue
			}
			if s.Sessions() > 0 {
				s.SetRules(nil)
				next.svcs[name] = &edgeService{Service: s.Service}
			}
			if s.src != nil {
				p.logger.Info("client policy removed", "service", name)
			}
		}
	}
	p.edge.Store(next)
}

func (t *edgeTable) lookup(service string) *edgeService {
	if t == nil {
		return nil
	}
	return t.svcs[service]
}

// admitClient applies the service's client policy to a new connection, session or request.
// Refusals are counted (flushed by edgeLoop) and reported by one event per client, service and
// minute at most.
func (p *Proxy) admitClient(service string, proto Protocol, client netip.Addr) (edgepolicy.Ticket, edgepolicy.Reason) {
	s := p.edge.Load().lookup(service)
	if s == nil {
		return edgepolicy.Ticket{}, edgepolicy.Admitted
	}
	t, d := s.Admit(client, time.Now().UnixNano())
	if d.Reason != edgepolicy.Admitted && d.Report {
		p.logger.Warn("client refused by the service's policy", "service", service, "protocol", proto,
			"client", client.String(), "reason", d.Reason.String(), "note", "one line per client and minute")
		p.events.Emit(events.Event{Kind: events.ClientRefused, Severity: events.Warning,
			Message: fmt.Sprintf("client %s refused by %q (%s): %s", client, service, proto, d.Reason),
			Fields: map[string]string{"service": service, "protocol": string(proto), "client_ip": client.String(),
				"reason": d.Reason.String()}})
	}
	return t, d.Reason
}

// edgeLoopEvery is how often refusal counts reach go-metrics and idle clients are swept.
const edgeLoopEvery = time.Second

// edgeLoop flushes the policies' counters, sweeps their idle clients and ends their report
// windows until ctx ends.
func (p *Proxy) edgeLoop(ctx context.Context) {
	t := time.NewTicker(edgeLoopEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.flushEdge(time.Now())
			return
		case now := <-t.C:
			p.flushEdge(now)
		}
	}
}

func (p *Proxy) flushEdge(now time.Time) {
	tab := p.edge.Load()
	if tab == nil {
		return
	}
	ns := now.UnixNano()
	for name, s := range tab.svcs {
		svc := []metrics.Label{{Name: "service", Value: name}}
		for r, n := range s.TakeRefused() {
			if n > 0 {
				metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "policy", "refused"}, float32(n),
					append(svc, metrics.Label{Name: "reason", Value: edgepolicy.Reason(r).String()}))
			}
		}
		metrics.SetGaugeWithLabels([]string{"nullnet", "proxy", "policy", "sessions"}, float32(s.Sessions()), svc)
		metrics.SetGaugeWithLabels([]string{"nullnet", "proxy", "policy", "clients"}, float32(s.Clients()), svc)
		s.Sweep(ns)
		if sum, ok := s.Flush(ns); ok {
			p.events.Emit(events.Event{Kind: events.ClientsRefusedSummary, Severity: events.Warning,
				Message: fmt.Sprintf("%q refused %d more connections in the last %s (%d clients beyond those reported)",
					name, sum.Suppressed, edgepolicy.ReportWindow, sum.MoreClients),
				Fields: map[string]string{"service": name, "refused": fmt.Sprint(sum.Suppressed),
					"more_clients": fmt.Sprint(sum.MoreClients), "interval": edgepolicy.ReportWindow.String()}})
		}
	}
}
