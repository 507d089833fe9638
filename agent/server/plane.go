package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/server/session"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// teardownTimeout is the least time a teardown waits for both acks before it is retried.
const teardownTimeout = time.Minute

const (
	networkVXLAN  = config.NetworkVXLAN
	networkDirect = config.NetworkDirect
)

// plane is the session side of the server: control channels (control.go), replica watches
// (replicas.go), the session table (session/), the Proxy RPC (ingress_proxy.go) and the
// events and sessions HTTP routes. It turns Consul and node changes into teardowns.
type plane struct {
	s      *Server
	logger hclog.Logger
	// network is fixed at start: sessions built one way cannot be torn down the other way.
	network  string
	nodes    *registry
	replicas *replicaWatcher // nil without Consul
	table    *session.Table
	orphans  *orphanSet
	started  time.Time // adoptions wait for nodes only within server.orphan_grace of it

	// ctx ends when run returns; wg tracks the plane's own command goroutines.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// healthy is, per service, the replica ids that were candidates at the last look, to emit
	// replica_removed once per replica leaving.
	healthy map[string]map[string]bool
	// teardownSem bounds teardowns in flight per node (see teardownSlot).
	teardownSem map[string]chan struct{}

	// unhealthy is the critical replicas of close_on_unhealthy services (unhealthy.go).
	unhealthy *unhealthySet
}

func newPlane(s *Server) (*plane, error) {
	cfg := s.agentConfig().Server
	p := &plane{s: s, logger: s.logger.Named("plane"), network: cfg.Network, healthy: map[string]map[string]bool{},
		teardownSem: map[string]chan struct{}{}, orphans: newOrphanSet(), started: time.Now(), unhealthy: newUnhealthySet()}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if p.network == "" {
		p.network = networkVXLAN
	}
	if p.network != networkVXLAN && p.network != networkDirect {
		return nil, fmt.Errorf("server: unknown network %q (want %q or %q)", p.network, networkVXLAN, networkDirect)
	}
	p.nodes = newRegistry(p.logger.Named("nodes"), s.events,
		func() time.Duration { return s.agentConfig().Server.NodeGracePeriod }, p.nodeGone)
	if s.cfg.Consul != nil {
		p.replicas = newReplicaWatcher(s.cfg.Consul, p.logger.Named("replicas"), p.reconcileService, s.aclReporter("replicas"))
	}
	p.table = session.New(session.Config{
		Commander: &commander{p: p},
		NetIDs:    p.network == networkVXLAN,
		MinNetID:  cfg.NetIDMin,
		MaxNetID:  cfg.NetIDMax,
		Logger:    p.logger.Named("sessions"),
		Hooks:     p.hooks(),
	})
	return p, nil
}

func (p *plane) registerHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/events", p.handleEvents)
	mux.HandleFunc("GET /v1/sessions", p.handleSessions)
	mux.HandleFunc("GET /v1/sessions/{id}", p.handleSession)
	mux.HandleFunc("DELETE /v1/sessions/{id}", p.handleDeleteSession)
}

// run follows definition changes and Consul until ctx ends; then it stops the grace timers,
// the idle timers and the teardown retries, and returns once they have.
func (p *plane) run(ctx context.Context) {
	var wg sync.WaitGroup
	if p.replicas != nil {
		wg.Add(1)
		go func() { defer wg.Done(); p.replicas.run(ctx) }()
	}
	for {
		defs, version, changed := p.s.defs.All()
		if version > 0 {
			p.reconcileDefinitions(defs)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			p.nodes.close()
			p.orphans.close()
			p.cancel()
			p.wg.Wait()
			wg.Wait()
			p.table.Close()
			return
		}
	}
}

// reconcileDefinitions tears down sessions of removed services and of services that stopped
// being entry points, and keeps a replica watch on every entry point (so the first Proxy call
// for a service does not wait for Consul).
func (p *plane) reconcileDefinitions(defs []Definition) {
	byName := map[string]Definition{}
	keep := map[string]bool{}
	closing := map[string]bool{}
	for _, d := range defs {
		byName[d.Service] = d
		if d.EntryPoint {
			keep[d.Service] = true
			if d.Policy.CloseOnUnhealthy {
				closing[d.Service] = true
			}
		}
	}
	p.unhealthy.logChange(p, p.unhealthy.setServices(closing, keep))
	p.table.TearDownWhere(func(s session.Session) bool {
		_, ok := byName[s.Service]
		return !ok
	}, session.ReasonServiceRemoved)
	p.table.TearDownWhere(func(s session.Session) bool {
		d, ok := byName[s.Service]
		return ok && !d.EntryPoint
	}, session.ReasonNotEntryPoint)
	if p.replicas != nil {
		p.replicas.retain(keep)
		for name := range keep {
			p.replicas.ensure(name)
		}
	}
}

// reconcileService tears down the sessions of a service whose replica is no longer usable.
func (p *plane) reconcileService(service string) {
	v := p.replicas.view(service)
	if !v.known {
		return
	}
	var critical []string
	for _, in := range v.all {
		if in.critical {
			critical = append(critical, in.ID)
		}
	}
	p.unhealthy.logChange(p, p.unhealthy.setCritical(service, critical))
	cands, _ := v.candidates(p.usableNode)
	now := map[string]bool{}
	for _, c := range cands {
		now[c.ID] = true
	}
	p.mu.Lock()
	prev := p.healthy[service]
	p.healthy[service] = now
	p.mu.Unlock()
	for id := range prev {
		if now[id] {
			continue
		}
		reason := v.status(session.Replica{ID: id})
		for _, in := range v.all {
			if in.ID == id {
				reason = v.status(in.Replica)
			}
		}
		if reason == "" {
			reason = "node_unreachable"
		}
		p.s.events.Emit(events.Event{Kind: events.ReplicaRemoved, Severity: events.Warning,
			Fields: map[string]string{"service": service, "replica": id, "reason": reason}})
	}
	p.table.TearDownWhere(func(s session.Session) bool {
		if s.Service != service {
			return false
		}
		return v.status(s.Replica) == session.ReasonReplicaUnhealthy
	}, session.ReasonReplicaUnhealthy)
	p.table.TearDownWhere(func(s session.Session) bool {
		if s.Service != service {
			return false
		}
		return v.status(s.Replica) == session.ReasonReplicaGone
	}, session.ReasonReplicaGone)
}

// reconcileEnds compares the tunnel ends a (re)connecting node reports in its Hello with the
// sessions: a session that lost its end on that node is torn down (end_lost), and an end no
// session holds becomes an orphan (adoptable until server.orphan_grace ends, then removed as
// stale; orphans.go). Only sessions that were active before this channel
// opened are judged: anything newer was built through it.
func (p *plane) reconcileEnds(h *pb.Hello, connectedAt time.Time) {
	if p.network != networkVXLAN {
		return
	}
	type end struct {
		id   uint32
		side pb.OverlaySide
	}
	has := map[end]bool{}
	for _, e := range h.GetActiveEnds() {
		has[end{e.NetId, e.Side}] = true
	}
	node := h.NodeName
	lost := p.table.TearDownWhere(func(s session.Session) bool {
		if s.State != session.StateActive || !s.Created.Before(connectedAt) {
			return false
		}
		return (s.Replica.Node == node && !has[end{s.NetID, pb.OverlaySide_OVERLAY_SIDE_SERVICE}]) ||
			(s.ProxyNode == node && !has[end{s.NetID, pb.OverlaySide_OVERLAY_SIDE_PROXY}])
	}, session.ReasonEndLost)
	// An end whose id no session holds is an orphan: its id is reserved (no new session can
	// take it) and it is kept for server.orphan_grace for a proxy to adopt (orphans.go), then
	// removed as stale. Ids held by a session are that session's business (a tearing-down one
	// removes the end itself).
	reported := map[uint32][]pb.OverlaySide{}
	for e := range has {
		reported[e.id] = append(reported[e.id], e.side)
	}
	holders := map[uint32]session.Session{}
	for _, s := range p.table.List() {
		if s.NetID != 0 {
			holders[s.NetID] = s
		}
	}
	orphaned := p.noteOrphans(node, reported, holders)
	if lost > 0 || orphaned > 0 {
		p.logger.Info("node reconnected", "node", node, "sessions_lost_end", lost, "orphaned_net_ids", orphaned,
			"orphan_grace", p.s.agentConfig().Server.OrphanGrace)
	}
}

// nodeRestarted runs when a node's agent said Hello with a new instance id: the uses its proxy
// role held before `before` (the old process was last seen then) ended with that process, so
// they are released (their sessions start idling and end after their timeout unless a new use
// arrives); its tunnel ends are judged by reconcileEnds like any reconnect's.
func (p *plane) nodeRestarted(node string, before time.Time) {
	released := p.table.ReleaseNodeBefore(node, before)
	p.logger.Info("node's agent restarted", "node", node, "uses_released", released)
}

// usableNode: in vxlan mode a replica's node must have a live control channel.
func (p *plane) usableNode(node string) bool {
	if p.network == networkDirect {
		return true
	}
	info, ok := p.nodes.node(node)
	return ok && info.Connected
}

// nodeGone runs when a node's control channel stayed down for the grace period.
func (p *plane) nodeGone(node string) {
	released := p.table.ReleaseNode(node)
	asProxy := p.table.TearDownWhere(func(s session.Session) bool { return s.ProxyNode == node }, session.ReasonProxyGone)
	asService := p.table.TearDownWhere(func(s session.Session) bool { return s.Replica.Node == node }, session.ReasonNodeGone)
	p.logger.Warn("node gone", "node", node, "uses_released", released, "proxy_sessions", asProxy, "service_sessions", asService)
	if p.replicas != nil {
		p.mu.Lock()
		var services []string
		for svc := range p.healthy {
			services = append(services, svc)
		}
		p.mu.Unlock()
		for _, svc := range services {
			p.reconcileService(svc) // emits replica_removed for the node's replicas
		}
	}
}

func (p *plane) hooks() session.Hooks {
	fields := func(s session.Session) map[string]string {
		f := map[string]string{"session": s.ID, "service": s.Service, "client_ip": s.ClientIP,
			"proxy_node": s.ProxyNode, "replica": s.Replica.ID, "service_node": s.Replica.Node}
		if s.NetID != 0 {
			f["net_id"] = strconv.FormatUint(uint64(s.NetID), 10)
		}
		return f
	}
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
	}
	return session.Hooks{
		Created: func(s session.Session) {
			f := fields(s)
			f["upstream"] = s.UpstreamIP + ":" + strconv.Itoa(s.UpstreamPort)
			f["setup_latency_ms"] = ms(s.SetupLatency)
			p.s.events.Emit(events.Event{Kind: events.SessionCreated, Fields: f})
		},
		Adopted: func(s session.Session) {
			f := fields(s)
			f["upstream"] = s.UpstreamIP + ":" + strconv.Itoa(s.UpstreamPort)
			f["setup_latency_ms"] = ms(0)
			p.s.events.Emit(events.Event{Kind: events.SessionAdopted, Fields: f})
		},
		SetupFailed: func(s session.Session, err error) {
			kind, sev := events.SetupFailed, events.Error
			if errors.Is(err, errAckTimeout) {
				kind = events.SetupTimedOut
			}
			if errors.Is(err, session.ErrTornDownInSetup) {
				sev = events.Warning
			}
			f := fields(s)
			f["setup_latency_ms"] = ms(s.SetupLatency)
			p.s.events.Emit(events.Event{Kind: kind, Severity: sev, Message: err.Error(), Fields: f})
		},
		TornDown: func(s session.Session, reason string) {
			f := fields(s)
			f["reason"] = reason
			f["lifetime_s"] = strconv.FormatFloat(time.Since(s.Created).Seconds(), 'f', 1, 64)
			p.s.events.Emit(events.Event{Kind: events.SessionTornDown, Fields: f})
		},
		TeardownFailed: func(s session.Session, reason string, err error) {
			f := fields(s)
			f["reason"] = reason
			p.s.events.Emit(events.Event{Kind: events.TeardownFailed, Severity: events.Warning, Message: err.Error(), Fields: f})
		},
		PoolExhausted: func(k session.Key, err error) {
			p.s.events.Emit(events.Event{Kind: events.NetIDPoolExhausted, Severity: events.Error, Message: err.Error(),
				Fields: map[string]string{"service": k.Service, "client_ip": k.ClientIP, "proxy_node": k.ProxyNode}})
		},
	}
}

// commander builds and removes tunnel ends through the nodes' control channels.
type commander struct{ p *plane }

// Setup sends OverlaySetup to both nodes at once and waits for both acks until
// server.setup_timeout. Direct mode has nothing to build.
func (c *commander) Setup(ctx context.Context, s session.Session) (session.Upstream, error) {
	p := c.p
	if p.network == networkDirect {
		return session.Upstream{IP: s.Replica.Address, Port: s.Replica.Port}, nil
	}
	svcNode, ok1 := p.nodes.node(s.Replica.Node)
	proxyNode, ok2 := p.nodes.node(s.ProxyNode)
	if !ok1 || !svcNode.Connected {
		return session.Upstream{}, fmt.Errorf("service node %q: %w", s.Replica.Node, errNodeNotConnected)
	}
	if !ok2 || !proxyNode.Connected {
		return session.Upstream{}, fmt.Errorf("proxy node %q: %w", s.ProxyNode, errNodeNotConnected)
	}
	up, err := overlay.Upstream(s.NetID)
	if err != nil {
		return session.Upstream{}, err
	}
	var mtu uint32
	if svcNode.UnderlayMTU > 0 && proxyNode.UnderlayMTU > 0 {
		mtu = uint32(overlay.OverlayMTU(int(min(svcNode.UnderlayMTU, proxyNode.UnderlayMTU))))
	}
	ctx, cancel := context.WithTimeout(ctx, p.s.agentConfig().Server.SetupTimeout)
	defer cancel()
	ends := []struct {
		node        string
		side        pb.OverlaySide
		local, peer string
	}{
		{s.Replica.Node, pb.OverlaySide_OVERLAY_SIDE_SERVICE, svcNode.Underlay, proxyNode.Underlay},
		{s.ProxyNode, pb.OverlaySide_OVERLAY_SIDE_PROXY, proxyNode.Underlay, svcNode.Underlay},
	}
	errs := make([]error, len(ends))
	var wg sync.WaitGroup
	for i, e := range ends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ack, err := p.nodes.command(ctx, e.node, func(id string) *pb.ServerMessage {
				return &pb.ServerMessage{Msg: &pb.ServerMessage_OverlaySetup{OverlaySetup: &pb.OverlaySetup{
					CommandId: id, NetId: s.NetID, Side: e.side, LocalUnderlay: e.local, RemoteUnderlay: e.peer,
					Mtu: mtu, Service: s.Service}}}
			})
			if err == nil && ack.Error != "" {
				err = fmt.Errorf("node %q: %s", e.node, ack.Error)
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s side: %w", sideName(e.side), err)
				cancel() // the other end is rolled back anyway: stop waiting for it
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return session.Upstream{}, err
	}
	return session.Upstream{IP: up.String(), Port: s.Replica.Port}, nil
}

// Teardown removes both ends and succeeds once both acked; an end whose node is gone counts
// as removed (a restarting agent removes its leftovers).
func (c *commander) Teardown(ctx context.Context, s session.Session, reason string) error {
	p := c.p
	if p.network == networkDirect {
		return nil
	}
	// A teardown is not on any client's path, and a node works through a burst of them (each
	// costs the kernel tens of milliseconds) in order: a short deadline would only make the
	// server resend commands the node has queued already. The deadline starts once the
	// command is sent (see teardownSlot).
	ackWait := max(p.s.agentConfig().Server.SetupTimeout, teardownTimeout)
	ends := []struct {
		node string
		side pb.OverlaySide
	}{{s.Replica.Node, pb.OverlaySide_OVERLAY_SIDE_SERVICE}, {s.ProxyNode, pb.OverlaySide_OVERLAY_SIDE_PROXY}}
	errs := make([]error, len(ends))
	var wg sync.WaitGroup
	for i, e := range ends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := p.teardownSlot(ctx, e.node)
			if err != nil {
				errs[i] = err
				return
			}
			defer release()
			actx, cancel := context.WithTimeout(ctx, ackWait)
			defer cancel()
			ack, err := p.nodes.command(actx, e.node, func(id string) *pb.ServerMessage {
				return &pb.ServerMessage{Msg: &pb.ServerMessage_OverlayTeardown{OverlayTeardown: &pb.OverlayTeardown{
					CommandId: id, NetId: s.NetID, Side: e.side, Reason: reason}}}
			})
			switch {
			case errors.Is(err, errNodeGone):
				return
			case err == nil && ack.Error != "":
				err = fmt.Errorf("node %q: %s", e.node, ack.Error)
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s side: %w", sideName(e.side), err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// teardownsPerNode bounds the teardowns in flight towards one node, so that a burst of idle
// timeouts (thousands at once) does not fill the node's command queue ahead of the setups
// clients are waiting for. It is generous on purpose: a node can only remove many ends in one
// kernel batch (one RTM_DELLINK per device group costs what one device does) if it sees many
// teardowns at once.
const teardownsPerNode = 64

// teardownSlot waits for a free teardown slot towards node.
func (p *plane) teardownSlot(ctx context.Context, node string) (release func(), err error) {
	p.mu.Lock()
	sem := p.teardownSem[node]
	if sem == nil {
		sem = make(chan struct{}, teardownsPerNode)
		p.teardownSem[node] = sem
	}
	p.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func sideName(s pb.OverlaySide) string {
	if s == pb.OverlaySide_OVERLAY_SIDE_SERVICE {
		return "service"
	}
	return "proxy"
}

// agentConfig is the configuration in effect.
func (s *Server) agentConfig() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agentCfg
}

// network is the mode the plane was started with.
func (s *Server) network() string { return s.plane.network }
