package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/proxy/tlsterm"
	"github.com/nullnet/nullnet/lib/retry"
	pb "github.com/nullnet/nullnet/proto"
)

// httpsServer serves proxy.https_addr: TLS terminated by tlsterm (certificate by SNI from the
// proxy's certs.Set), then the very handler of the :80 router, so Host routing, limits, the
// access log and X-Forwarded-* (with proto "https") are the same on both listeners.
type httpsServer struct {
	p    *Proxy
	r    *httpRouter
	log  hclog.Logger
	conf *tls.Config
	addr atomic.Pointer[string]      // bound address
	srv  atomic.Pointer[http.Server] // the current server, for Drain

	// Counted per handshake, reported once a second (a labelled metric call per handshake
	// would cost more than the counting).
	handshakes [2]atomic.Int64 // TLS 1.2, TLS 1.3
	failures   []atomic.Int64  // by tlsterm.Reason.Index()
	bind       frontBind
}

func newHTTPSServer(p *Proxy) *httpsServer {
	h := &httpsServer{p: p, r: p.http, log: p.logger.Named("https"), conf: tlsterm.NewConfig(p.certs),
		failures: make([]atomic.Int64, len(tlsterm.Reasons))}
	h.bind.p, h.bind.log, h.bind.protocol, h.bind.key = p, h.log, "https", "proxy.https_addr"
	return h
}

// Addr is the bound address ("" until bound).
func (h *httpsServer) Addr() string {
	if a := h.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// run binds addr (retrying a failed bind with capped backoff and one event per distinct error,
// as the port-table listeners do) and serves until ctx ends or Drain shuts the server down.
func (h *httpsServer) run(ctx context.Context, addr string) {
	flushDone := make(chan struct{})
	go func() { defer close(flushDone); h.flushLoop(ctx) }()
	defer func() { <-flushDone }()

	for {
		ln := h.bind.listen(ctx, addr)
		if ln == nil {
			return
		}
		bound := ln.Addr().String()
		h.addr.Store(&bound)
		h.log.Info("HTTPS listener open", "addr", bound)
		h.p.events.Emit(events.Event{Kind: events.ListenerOpened, Severity: events.Info,
			Message: fmt.Sprintf("listening on %s for HTTPS", bound),
			Fields:  map[string]string{"protocol": "https", "port": portOf(bound), "service": ""}})
		// PROXY headers from proxy.proxy_protocol_from are read before the handshake.
		tl := tlsterm.NewListener(ppListener{Listener: ln, p: h.p}, tlsterm.ListenerConfig{TLS: h.conf, OnSuccess: h.handshakeDone,
			OnFailure: h.handshakeFailed})
		srv := h.r.newServer(ctx)
		// net/http's HTTP/2 server logs protocol errors a client can cause at will (a bad
		// preface, a broken frame): at most a few lines per interval reach the log.
		srv.ErrorLog = log.New(&logLimiter{next: h.log, max: 10, every: 10 * time.Second}, "", 0)
		h.srv.Store(srv)
		if h.p.draining.Load() { // Drain ran between the check above and Store: it saw no server
			tl.Close()
			return
		}
		err := serveHTTP(ctx, srv, tl)
		if ctx.Err() != nil || err == nil {
			h.p.events.Emit(events.Event{Kind: events.ListenerClosed, Severity: events.Info,
				Message: fmt.Sprintf("closed HTTPS listener %s", bound),
				Fields:  map[string]string{"protocol": "https", "port": portOf(bound), "service": ""}})
			return
		}
		h.log.Error("HTTPS listener failed; rebinding", "addr", bound, "error", err)
		if !retry.Sleep(ctx, retry.Jitter(h.p.bindRetryMin, 0.2)) {
			return
		}
	}
}

// shutdown is Drain's part: stop accepting, wait for requests in flight until ctx ends.
func (h *httpsServer) shutdown(ctx context.Context) {
	if srv := h.srv.Load(); srv != nil {
		if err := srv.Shutdown(ctx); err != nil && err != http.ErrServerClosed {
			h.log.Debug("HTTPS drain ended with requests open", "error", err)
		}
	}
}

func (h *httpsServer) handshakeDone(c *tls.Conn) {
	i := 0
	if c.ConnectionState().Version == tls.VersionTLS13 {
		i = 1
	}
	h.handshakes[i].Add(1)
}

// handshakeFailed counts a failure; the ones that say something about the client or the
// certificates also become an event, aggregated per reason (events.RemoteTriggered): a scanner
// can fail handshakes as fast as it likes without flooding the log or the event ring. A client
// that leaves or stalls is only counted.
func (h *httpsServer) handshakeFailed(f tlsterm.Failure) {
	h.failures[f.Reason.Index()].Add(1)
	if f.Reason == tlsterm.ReasonClosed || f.Reason == tlsterm.ReasonTimeout {
		return
	}
	client := ""
	if f.Remote != nil {
		client = addrPortOf(f.Remote).Addr().Unmap().String()
	}
	msg := "TLS handshake failed: " + string(f.Reason)
	if f.Reason == tlsterm.ReasonUnknownName {
		msg = fmt.Sprintf("TLS handshake for %q failed: no certificate for that name", f.ServerName)
	}
	h.p.events.Emit(events.Event{Kind: events.TLSHandshakeFailed, Severity: events.Warning, Message: msg,
		Fields: map[string]string{"reason": string(f.Reason), "server_name": f.ServerName, "client_ip": client,
			"error": errString(f.Err)}})
}

// flushLoop reports the handshake counters once a second, and once more when ctx ends.
func (h *httpsServer) flushLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			h.flush()
		case <-ctx.Done():
			h.flush()
			return
		}
	}
}

func (h *httpsServer) flush() {
	for i, v := range []string{"1.2", "1.3"} {
		if n := h.handshakes[i].Swap(0); n > 0 {
			metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "https", "handshakes"}, float32(n),
				[]metrics.Label{{Name: "version", Value: v}})
		}
	}
	for i, r := range tlsterm.Reasons {
		if n := h.failures[i].Swap(0); n > 0 {
			metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "https", "handshake_failures"}, float32(n),
				[]metrics.Label{{Name: "reason", Value: string(r)}})
		}
	}
}

// redirectHost is the authority of https_redirect's Location for a host: no port when HTTPS is
// on 443 (or off: another front end terminates it), the HTTPS listener's port otherwise.
func (h *httpsServer) redirectHost(host string) string {
	port := portOf(h.Addr())
	if port == "" {
		port = portOf(h.p.httpsAddr)
	}
	if port == "" || port == "443" || port == "0" {
		return host
	}
	return net.JoinHostPort(host, port)
}

func portOf(addr string) string {
	if _, p, err := net.SplitHostPort(addr); err == nil {
		return p
	}
	return ""
}

// acmeChallengePath is where ACME HTTP-01 tokens are fetched (RFC 8555 §8.3).
const acmeChallengePath = "/.well-known/acme-challenge/"

// edge runs before Host routing: it answers ACME HTTP-01 challenges from the certificate
// snapshot, redirects plain HTTP to HTTPS for services with https_redirect, and adds HSTS to
// HTTPS responses of services with hsts. It reports whether it answered the request.
func (r *httpRouter) edge(w http.ResponseWriter, req *http.Request, service string) bool {
	if strings.HasPrefix(req.URL.Path, acmeChallengePath) && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
		token := req.URL.Path[len(acmeChallengePath):]
		if ka, ok := r.p.certs.Current().HTTPChallenges[token]; ok && token != "" {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			if req.Method == http.MethodGet {
				_, _ = w.Write([]byte(ka))
			}
			return true
		}
		// A token the servers did not ask for may be the service's own (certbot behind the
		// proxy): routed as usual.
	}
	pol := r.p.httpPolicy(service)
	if pol == nil {
		return false
	}
	if req.TLS == nil {
		if !pol.GetHttpsRedirect() {
			return false
		}
		uri := req.URL.RequestURI()
		if !strings.HasPrefix(uri, "/") {
			uri = "/" // "*" (OPTIONS *) or an absolute form
		}
		w.Header().Set("Location", "https://"+r.p.https.redirectHost(service)+uri)
		w.WriteHeader(http.StatusPermanentRedirect)
		return true
	}
	if age := pol.GetHstsMaxAgeSecs(); age > 0 {
		// Set before the upstream's headers are copied in: if the upstream sends its own, ours
		// comes first, and browsers heed only the first (RFC 6797 §8.1).
		w.Header().Set("Strict-Transport-Security", "max-age="+strconv.FormatUint(age, 10))
	}
	return false
}

// httpPolicy returns the edge settings of an http service from the port table's http_services
// (nil: none).
func (p *Proxy) httpPolicy(service string) *pb.ServicePolicy {
	if service == "" {
		return nil
	}
	if m, ok := p.httpService(service); ok {
		return m.GetPolicy()
	}
	return nil
}

// logLimiter is the io.Writer of a standard logger that passes at most max lines per interval
// to next (as warnings) and then one line saying how many it dropped.
type logLimiter struct {
	next  hclog.Logger
	max   int
	every time.Duration

	mu      sync.Mutex
	start   time.Time
	n       int
	dropped int
}

func (l *logLimiter) Write(b []byte) (int, error) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.start) >= l.every {
		if l.dropped > 0 {
			l.next.Warn("server errors suppressed", "count", l.dropped, "interval", l.every)
		}
		l.start, l.n, l.dropped = now, 0, 0
	}
	pass := l.n < l.max
	if pass {
		l.n++
	} else {
		l.dropped++
	}
	l.mu.Unlock()
	if pass {
		l.next.Warn(strings.TrimSpace(string(b)))
	}
	return len(b), nil
}
