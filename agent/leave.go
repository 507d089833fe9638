package agent

import (
	"context"
	"net/http"
	"sync"
)

// leaveState is a one-shot request to leave (drain, then stop); its zero value is ready.
type leaveState struct {
	once sync.Once
	mu   sync.Mutex
	ch   chan struct{}
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

func (l *leaveState) request() {
	ch := l.channel()
	l.once.Do(func() { close(ch) })
}

// Leave asks the agent to stop gracefully, as SIGTERM and `nullnet leave` do: a proxy drains
// (listeners stop accepting; open connections and requests get proxy.drain_timeout to finish),
// then Run stops every role. Cancelling Run's context meanwhile (a second signal) stops at
// once. Leave returns immediately; calling it again changes nothing.
func (a *Agent) Leave() { a.leave.request() }

// drain runs the graceful part of a leave; it returns when the proxy has drained (or there is
// no proxy) or ctx ends.
func (a *Agent) drain(ctx context.Context) {
	a.logger.Info("agent leaving: draining before stop")
	if a.proxy != nil {
		a.proxy.Drain(ctx)
	}
}

// handleLeave is PUT /v1/agent/leave: the agent drains and stops, as on SIGTERM. It answers
// at once; the drain's end shows in the log and in /v1/proxy/listeners ("draining").
func (a *Agent) handleLeave(w http.ResponseWriter, _ *http.Request) {
	a.Leave()
	body := map[string]any{"leaving": true}
	if a.proxy != nil {
		body["drain_timeout"] = a.Config().Proxy.DrainTimeout.String()
	}
	writeJSON(w, http.StatusOK, body)
}
