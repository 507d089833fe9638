package proxy

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	"github.com/nullnet/nullnet/lib/retry"
)

// httpRouter serves proxy.http_addr: the Host header names the service, every request is
// resolved once and released when it ends (for a WebSocket, when the upgraded connection ends).
type httpRouter struct {
	p    *Proxy
	addr atomic.Pointer[string] // bound address, readable while Run is going
	bind frontBind
	rp   *httputil.ReverseProxy
	log  hclog.Logger
	srv  atomic.Pointer[http.Server] // set by run once bound
	// inflight counts requests in ServeHTTP, upgraded (WebSocket) ones until they close: Drain
	// waits for it to reach 0.
	inflight atomic.Int64
	// routes are the path routes of the last port table (http_routes.go); access is the
	// access log (http_accesslog.go).
	routes atomic.Pointer[routeTables]
	access atomic.Pointer[accessLogState]
}

type targetKey struct{}

func newHTTPRouter(p *Proxy) *httpRouter {
	r := &httpRouter{p: p, log: p.logger.Named("http")}
	r.bind.p, r.bind.log, r.bind.protocol, r.bind.key = p, r.log, "http", "proxy.http_addr"
	transport := &http.Transport{
		Proxy: nil, // never an environment proxy: upstreams are overlay addresses
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: p.settings().DialTimeout, KeepAlive: 30 * time.Second}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	r.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(targetKey{}).(netip.AddrPort)
			pr.SetURL(&url.URL{Scheme: "http", Host: t.String()})
			// The upstream sees the name the client asked for, as with any virtual host.
			pr.Out.Host = pr.In.Host
			// A client must not choose its own address: every forwarding header it sent is
			// dropped (ReverseProxy drops only XFF, XFH, XFP and Forwarded), then ours are set.
			stripForwarding(pr.Out.Header)
			pr.SetXForwarded()
			setRouteHeaders(pr)
			if ap := clientOfRequest(pr.In); ap.Port() != 0 || !ap.Addr().IsUnspecified() {
				client := ap.Addr().String() // unmapped: no ::ffff: form from a dual-stack socket
				pr.Out.Header.Set("X-Forwarded-For", client)
				pr.Out.Header.Set("X-Real-Ip", client)
			}
			if la, ok := pr.In.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
				pr.Out.Header.Set("X-Forwarded-Port", strconv.Itoa(int(addrPortOf(la).Port())))
			}
		},
		Transport:    transport,
		ErrorHandler: r.upstreamFailed,
		ErrorLog:     r.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return r
}

// run binds addr (retrying a failed bind with capped backoff and one event per distinct error,
// as the HTTPS listener and the port-table listeners do) and serves until ctx ends or Drain
// shuts the server down; a socket that fails while serving is bound again.
func (r *httpRouter) run(ctx context.Context, addr string) {
	for {
		ln := r.bind.listen(ctx, addr)
		if ln == nil {
			return
		}
		bound := ln.Addr().String()
		r.addr.Store(&bound)
		r.log.Info("HTTP router listening", "addr", bound)
		srv := r.newServer(ctx)
		r.srv.Store(srv)
		if r.p.draining.Load() { // Drain ran between the check above and Store: it saw no server
			ln.Close()
			return
		}
		// PROXY headers from proxy.proxy_protocol_from are read before the request.
		err := serveHTTP(ctx, srv, ppListener{Listener: ln, p: r.p})
		if ctx.Err() != nil || err == nil {
			return
		}
		r.log.Error("HTTP router failed; rebinding", "addr", bound, "error", err)
		if !retry.Sleep(ctx, retry.Jitter(r.p.bindRetryMin, 0.2)) {
			return
		}
	}
}

// serveHTTP runs srv (the :80 router's or the HTTPS listener's) on ln until ctx ends, then
// closes it (nil). The graceful part of a stop is Drain, which shuts the server down first,
// after which serveHTTP waits for ctx; whatever is still open when ctx ends is cut, and upgraded
// connections end through their request context. A socket that fails returns its error.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			ln.Close()
			return fmt.Errorf("serving %s: %w", ln.Addr(), err)
		}
		<-ctx.Done() // Drain shut the server down: requests it waited for are done
		srv.Close()
		return nil
	case <-ctx.Done():
	}
	srv.Close()
	<-errc
	return nil
}

func (r *httpRouter) newServer(ctx context.Context) *http.Server {
	return &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 30 * time.Second,
		// Go answers 431 past this (plus its 4 KiB of slack); per-line limits are checked in
		// ServeHTTP (checkHeaderSizes).
		MaxHeaderBytes: maxHeaderBytes,
		IdleTimeout:    2 * time.Minute,
		BaseContext:    func(net.Listener) context.Context { return ctx },
		ErrorLog:       r.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
}

// Addr is the router's bound address (tests bind port 0).
func (r *httpRouter) Addr() string {
	if a := r.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Header limits, as nginx (large_client_header_buffers 4 8k: a request line or a header line
// over 8 KiB is refused) and HAProxy (tune.bufsize 16 KiB for the whole head) apply them: a
// proxy that forwards what its upstream's own front end would refuse hands attackers a bigger
// surface than the service was built for.
const (
	maxHeaderLine  = 8 << 10  // one header field (name, ": " and value), and the request target
	maxHeaderBytes = 64 << 10 // the whole request head
)

// checkHeaderSizes returns the status (414 or 431) and a reason when a request line or header
// field is longer than maxHeaderLine; 0 when the request is within limits. The total is
// enforced by http.Server.MaxHeaderBytes before the handler runs.
func checkHeaderSizes(req *http.Request) (int, string) {
	if len(req.RequestURI) > maxHeaderLine {
		return http.StatusRequestURITooLong, fmt.Sprintf("The request target is longer than %d bytes.", maxHeaderLine)
	}
	if len(req.Host)+len("Host: ") > maxHeaderLine {
		return http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("The Host header is longer than %d bytes.", maxHeaderLine)
	}
	for name, values := range req.Header {
		for _, v := range values {
			if len(name)+2+len(v) > maxHeaderLine {
				return http.StatusRequestHeaderFieldsTooLarge,
					fmt.Sprintf("A header field is longer than %d bytes.", maxHeaderLine)
			}
		}
	}
	return 0, ""
}

// isForwardingHeader reports whether a request header claims something about the client or
// the hops it came through: X-Forwarded-* (any suffix), X-Real-IP and Forwarded, in any case
// and with '_' for '-' (CGI-style back ends map X_Forwarded_For and X-Forwarded-For to the same
// variable, and Go keeps a name with '_' as sent).
func isForwardingHeader(name string) bool {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return strings.HasPrefix(n, "x-forwarded-") || n == "x-forwarded" || n == "x-real-ip" || n == "forwarded"
}

// stripForwarding deletes every forwarding header from h.
func stripForwarding(h http.Header) {
	for name := range h {
		if isForwardingHeader(name) {
			delete(h, name)
		}
	}
}

// serviceFromHost strips the port from a Host header (IPv6 literals keep their brackets off).
func serviceFromHost(host string) string {
	if strings.HasPrefix(host, "[") {
		if h, _, err := net.SplitHostPort(host); err == nil {
			return h
		}
		return strings.Trim(host, "[]")
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

func (r *httpRouter) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.inflight.Add(1)
	defer r.inflight.Add(-1)
	start := time.Now()
	service := serviceFromHost(req.Host)
	sw := &statusWriter{ResponseWriter: w}
	target, upstream := "", netip.AddrPort{} // set once known, for the access log
	defer func() {
		r.logAccess(req, sw, start, target, upstream)
		metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "http", "requests"}, 1,
			[]metrics.Label{{Name: "service", Value: service}, {Name: "code", Value: fmt.Sprint(sw.code())}})
		r.log.Debug("request", "client", req.RemoteAddr, "host", req.Host, "method", req.Method,
			"path", req.URL.Path, "status", sw.code(), "duration", time.Since(start))
	}()
	if code, what := checkHeaderSizes(req); code != 0 {
		errorPage(sw, code, http.StatusText(code), what)
		return
	}
	if r.edge(sw, req, service) { // ACME HTTP-01, https_redirect, HSTS (https.go)
		return
	}
	if service == "" {
		errorPage(sw, http.StatusBadRequest, "Missing Host header",
			"This proxy routes by the Host header, and the request has none.")
		return
	}
	if !config.ValidServiceName(service) {
		// An address or a malformed name can never be a stack service: answer without asking
		// the server (scanners send such Hosts all day).
		errorPage(sw, http.StatusNotFound, "Unknown host",
			fmt.Sprintf("No service is named %q: Host must be the name of a stack service.", service))
		return
	}
	client := clientOfRequest(req)
	ticket, ok := r.admit(sw, service, client.Addr())
	if !ok {
		return
	}
	defer ticket.Release()
	target, routed := r.route(service, req)
	if target != service {
		// A route must not bypass its target's own allow-list and limits: the request passes
		// the policies of both the Host's service and the target.
		tt, ok := r.admit(sw, target, client.Addr())
		if !ok {
			return
		}
		defer tt.Release()
	}
	lease, err := r.p.resolver.Resolve(req.Context(), client.Addr(), target, HTTP)
	if err != nil {
		r.lookupFailed(sw, target, client.Addr(), err)
		return
	}
	defer r.p.resolver.Release(lease)
	upstream = lease.Upstream
	ctx := context.WithValue(routed.Context(), targetKey{}, lease.Upstream)
	if target != service {
		ctx = context.WithValue(ctx, routedKey{}, target) // upstreamFailed names the target
	}
	if lease.ReplicaID != "" && r.p.servicePolicy(target).GetCloseOnUnhealthy() {
		// Ended when the replica turns critical (unhealthy.go): cancelling the request ends a
		// streamed response, and ReverseProxy closes an upgraded connection with it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer r.p.httpUses.track(target, lease.ReplicaID, cancel)()
	}
	r.rp.ServeHTTP(sw, routed.WithContext(ctx))
}

// admit applies service's client policy (allow/deny lists, per-client limits) to a request,
// answering 403 or 429 itself when the client is refused.
func (r *httpRouter) admit(w http.ResponseWriter, service string, client netip.Addr) (edgepolicy.Ticket, bool) {
	ticket, why := r.p.admitClient(service, HTTP, client)
	if why == edgepolicy.Admitted {
		return ticket, true
	}
	if why.Listed() {
		errorPage(w, http.StatusForbidden, "Forbidden",
			fmt.Sprintf("Service <code>%s</code> does not accept requests from your address.", html.EscapeString(service)))
		return ticket, false
	}
	w.Header().Set("Retry-After", "1")
	errorPage(w, http.StatusTooManyRequests, "Too many requests",
		fmt.Sprintf("Service <code>%s</code> limits how many requests one client may make (%s).", html.EscapeString(service), why))
	return ticket, false
}

func (r *httpRouter) lookupFailed(w http.ResponseWriter, service string, client netip.Addr, err error) {
	svc := html.EscapeString(service)
	switch {
	case errors.Is(err, ErrUnknownService), errors.Is(err, ErrNotEntryPoint):
		// Scanners hit unknown hosts all day: a metric, not an event.
		errorPage(w, http.StatusNotFound, "Unknown service",
			fmt.Sprintf("No service named <code>%s</code> is exposed by this proxy.", svc))
		return
	case errors.Is(err, ErrNoReplica):
		w.Header().Set("Retry-After", "5")
		errorPage(w, http.StatusServiceUnavailable, "Service unavailable",
			fmt.Sprintf("Service <code>%s</code> has no healthy replica right now. Try again shortly.", svc))
	default:
		errorPage(w, http.StatusBadGateway, "Bad gateway",
			fmt.Sprintf("The proxy could not find an upstream for <code>%s</code>.", svc))
	}
	r.p.events.Emit(events.Event{Kind: events.UpstreamLookupFailed, Severity: events.Warning,
		Message: fmt.Sprintf("no upstream for %q (http)", service),
		Fields: map[string]string{"service": service, "client_ip": client.String(), "protocol": "http",
			"error": err.Error()}})
}

// upstreamFailed is the ReverseProxy error handler: the upstream could not be reached or
// broke off.
func (r *httpRouter) upstreamFailed(w http.ResponseWriter, req *http.Request, err error) {
	service := routedService(req)
	target, _ := req.Context().Value(targetKey{}).(netip.AddrPort)
	if errors.Is(err, context.Canceled) {
		// The client went away; nobody is left to read a page.
		w.WriteHeader(499)
		return
	}
	r.log.Warn("upstream request failed", "service", service, "upstream", target.String(), "error", err)
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "http", "upstream_failures"}, 1,
		[]metrics.Label{{Name: "service", Value: service}})
	errorPage(w, http.StatusBadGateway, "Bad gateway",
		fmt.Sprintf("The upstream of <code>%s</code> did not answer properly.", html.EscapeString(service)))
}

// errorPage writes a small page that says what happened.
func errorPage(w http.ResponseWriter, code int, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Nullnet-Error", strings.ToLower(strings.ReplaceAll(title, " ", "-")))
	w.WriteHeader(code)
	fmt.Fprintf(w, "<!doctype html>\n<html><head><title>%d %s</title></head>\n<body><h1>%d %s</h1>\n<p>%s</p>\n<hr><p>nullnet proxy</p></body></html>\n",
		code, title, code, title, body)
}

// statusWriter records the status code. Unwrap keeps Hijack and Flush reachable through
// http.ResponseController, which ReverseProxy uses for WebSocket upgrades.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  atomic.Int64 // body bytes sent; for an upgrade, bytes after the 101 (countingConn)
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes.Add(int64(n))
	return n, err
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}
