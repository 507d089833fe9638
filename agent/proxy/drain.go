package proxy

import (
	"context"
	"net/http"
	"time"
)

// drainPoll is how often Drain looks at what is still open. Drain runs once per process life,
// so polling two counters is simpler than a notification on every connection's end.
const drainPoll = 20 * time.Millisecond

// DrainResult says how a drain ended.
type DrainResult struct {
	Took time.Duration
	// TCPLeft and HTTPLeft are the connections and requests still open when the drain ended
	// (0 and 0 when everything finished in time); Run's stop cuts them.
	TCPLeft, HTTPLeft int64
	// UDPSessions were still open; they end when Run stops (their replies leave through the
	// listening socket, and a UDP session has no end of its own to wait for).
	UDPSessions int64
}

// Drain is the graceful half of a stop (SIGTERM, `nullnet leave`): TCP listeners, the HTTP
// router and the HTTPS listener stop accepting, UDP listeners admit no new client, port-table pushes are no longer
// applied, and open TCP connections and HTTP requests (WebSockets included) get up to
// proxy.drain_timeout to finish. ctx ends the drain early (a second signal). Drain returns when
// nothing is left or the time is up; the caller then cancels Run, which cuts what is left and
// releases the uses. Calling it again returns at once.
func (p *Proxy) Drain(ctx context.Context) DrainResult {
	start := time.Now()
	if !p.draining.CompareAndSwap(false, true) {
		return DrainResult{}
	}
	timeout := p.settings().DrainTimeout
	p.logger.Info("draining: listeners stop accepting", "drain_timeout", timeout,
		"tcp_connections", p.conns.len(), "http_requests", p.http.inflight.Load())
	p.stopAccepting()

	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	httpDone := make(chan struct{})
	go func() { // owned by Drain: waited for below
		defer close(httpDone)
		httpsDone := make(chan struct{})
		go func() { // owned here: waited for below
			defer close(httpsDone)
			p.https.shutdown(dctx)
		}()
		p.http.shutdown(dctx)
		<-httpsDone
	}()
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	completed := false
wait:
	for {
		if p.conns.len() == 0 && p.http.inflight.Load() == 0 {
			completed = true
			break
		}
		select {
		case <-dctx.Done():
			break wait
		case <-t.C:
		}
	}
	// Counted before anything else: once ctx ends, Run may already be closing what is left.
	res := DrainResult{Took: time.Since(start), TCPLeft: int64(p.conns.len()), HTTPLeft: p.http.inflight.Load(),
		UDPSessions: p.udpSessions()}
	cancel()
	<-httpDone
	if completed {
		p.logger.Info("drain complete", "took", res.Took.Round(time.Millisecond), "udp_sessions", res.UDPSessions)
	} else {
		why := "drain_timeout reached"
		if ctx.Err() != nil {
			why = "stop requested"
		}
		p.logger.Warn("drain cut short; open connections will be closed", "reason", why,
			"took", res.Took.Round(time.Millisecond), "tcp_connections", res.TCPLeft,
			"http_requests", res.HTTPLeft, "udp_sessions", res.UDPSessions)
	}
	return res
}

// Draining reports whether Drain has started.
func (p *Proxy) Draining() bool { return p.draining.Load() }

// stopAccepting closes every TCP listener (tls ones included) (their connections belong to the proxy and keep
// running) and leaves UDP listeners open for the sessions they carry; reconcile no longer
// opens anything once draining is set.
func (p *Proxy) stopAccepting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, s := range p.slots {
		if k.Protocol == UDP {
			continue
		}
		delete(p.slots, k)
		s.cancel()
		p.closing[k] = s.done
	}
}

// udpSessions counts the sessions of every UDP listener.
func (p *Proxy) udpSessions() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for k, s := range p.slots {
		if k.Protocol == UDP {
			s.mu.Lock()
			if s.active != nil {
				n += s.active()
			}
			s.mu.Unlock()
		}
	}
	return n
}

// shutdown stops the router accepting, closes idle keep-alive connections and waits for
// requests in flight until ctx ends (http.Server.Shutdown). Upgraded connections are not
// seen by Shutdown: Drain waits for them through inflight.
func (r *httpRouter) shutdown(ctx context.Context) {
	srv := r.srv.Load()
	if srv == nil {
		return
	}
	if err := srv.Shutdown(ctx); err != nil && err != http.ErrServerClosed {
		r.log.Debug("HTTP router drain ended with requests open", "error", err)
	}
}
