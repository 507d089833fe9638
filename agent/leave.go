package agent

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
)

// leaveState is a one-shot request to stop gracefully (drain, then stop); its zero value is
// ready. remove records that some request was an explicit leave.
type leaveState struct {
	once   sync.Once
	mu     sync.Mutex
	ch     chan struct{}
	remove atomic.Bool
}

func (l *leaveState) requested() <-chan struct{} { return l.channel() }

func (l *leaveState) channel() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch == nil {
		l.ch = make(chan struct{})
	}
	return l.ch
}

func (l *leaveState) request(remove bool) {
	if remove {
		l.remove.Store(true)
	}
	ch := l.channel()
	l.once.Do(func() { close(ch) })
}

// Two graceful ways out, told apart by what they do to the node's tunnel ends:
//
//   - Shutdown (SIGTERM, SIGINT: `systemctl stop` or `restart`, an upgrade) drains the proxy,
//     then stops every role; the client role leaves its tunnel ends in the kernel and its host
//     services and the agent registered in Consul (client.keep_tunnels_on_stop, default true),
//     as a Nomad client leaves its tasks running. Connections over those tunnels go on, and the
//     next start takes the ends over if it comes within server.node_grace_period.
//   - Leave (`nullnet leave`, PUT /v1/agent/leave) drains the same way, then removes the
//     node's tunnel ends and deregisters its host services and itself: the node is leaving
//     for good (decommission, maintenance that must not carry traffic).
//
// A user-space relay cannot outlive its process, so the proxy role drains either way.

// Leave asks the agent to leave: a proxy drains (listeners stop accepting; open connections and
// requests get proxy.drain_timeout to finish), then Run stops every role and the client role
// removes its tunnel ends and Consul registrations. Cancelling Run's context meanwhile (a second
// signal) cuts the drain short; the removal still happens. Leave returns immediately; calling it
// again changes nothing.
func (a *Agent) Leave() { a.leave.request(true) }

// Shutdown asks the agent to stop gracefully, as SIGTERM does: the same drain as Leave, but the
// node's tunnel ends and Consul registrations stay in place for the next start (unless
// client.keep_tunnels_on_stop = false). A Leave before or after it wins.
func (a *Agent) Shutdown() { a.leave.request(false) }

// keepsOnStop reports whether the stop under way leaves the node's tunnel ends and Consul
// registrations in place (the client role decides; an agent without one has none to keep).
func (a *Agent) keepsOnStop() bool {
	return a.client != nil && a.client.KeepsOnStop()
}

// drain runs the graceful part of a stop; it returns when the proxy has drained (or there is
// no proxy) or ctx ends.
func (a *Agent) drain(ctx context.Context) {
	leaving := a.leave.remove.Load()
	if leaving && a.client != nil {
		a.client.Leave() // before anything can end the roles' context
	}
	a.logger.Info("agent stopping gracefully: draining first", "leave", leaving, "keep_tunnels", a.keepsOnStop())
	if a.proxy != nil {
		a.proxy.Drain(ctx)
	}
}

// handleLeave is PUT /v1/agent/leave: the agent drains, stops and removes its tunnel ends and
// Consul registrations. It answers at once; the drain's end shows in the log and in
// /v1/proxy/listeners ("draining").
func (a *Agent) handleLeave(w http.ResponseWriter, _ *http.Request) {
	a.Leave()
	body := map[string]any{"leaving": true, "removes_tunnels": true}
	if a.proxy != nil {
		body["drain_timeout"] = a.Config().Proxy.DrainTimeout.String()
	}
	writeJSON(w, http.StatusOK, body)
}
