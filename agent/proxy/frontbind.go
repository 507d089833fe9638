package proxy

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/lib/retry"
)

// frontBind binds the proxy's own front listeners (the HTTP router on proxy.http_addr, the
// HTTPS listener on proxy.https_addr) as the port-table listeners are bound: a port that is
// taken is retried with capped backoff, one event per distinct error, and the last error kept
// for the status, while the proxy serves everything else.
type frontBind struct {
	p        *Proxy
	log      hclog.Logger
	protocol string                 // "http" or "https": event and metric label
	key      string                 // the config key, for the event message
	err      atomic.Pointer[string] // last bind error while retrying; nil once bound
}

// lastErr is the bind error being retried, "" when bound or not tried yet.
func (b *frontBind) lastErr() string {
	if e := b.err.Load(); e != nil {
		return *e
	}
	return ""
}

// listen binds addr; it returns nil only when ctx ends or the proxy drains first.
func (b *frontBind) listen(ctx context.Context, addr string) net.Listener {
	backoff, failures, lastErr := b.p.bindRetryMin, 0, ""
	port := portOf(addr)
	name := strings.ToUpper(b.protocol)
	for ctx.Err() == nil && !b.p.draining.Load() {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			b.err.Store(nil)
			return ln
		}
		failures++
		msg := err.Error()
		b.err.Store(&msg)
		metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "listener", "bind_failed"}, 1,
			[]metrics.Label{{Name: "protocol", Value: b.protocol}, {Name: "port", Value: port}, {Name: "service", Value: ""}})
		if msg != lastErr {
			b.p.events.Emit(events.Event{Kind: events.TCPListenerBindFailed, Severity: events.Error,
				Message: fmt.Sprintf("cannot listen on %s for %s (%s); retrying", addr, name, b.key),
				Fields:  map[string]string{"protocol": b.protocol, "port": port, "service": "", "error": msg}})
		}
		lastErr = msg
		b.log.Warn("listener bind failed; will retry", "addr", addr, "error", err, "retry_in", backoff,
			"attempt", failures)
		if !retry.Sleep(ctx, retry.Jitter(backoff, 0.2)) {
			return nil
		}
		backoff = min(backoff*2, b.p.bindRetryMax)
	}
	return nil
}
