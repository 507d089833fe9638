package agent

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/agent/tlsutil"
	"github.com/nullnet/nullnet/agent/version"
)

// HealthPath answers 200 while the agent serves its API. It is the only route open to callers
// without a client certificate under verify_incoming, so that Consul's check can probe it.
const HealthPath = "/v1/agent/health" // the route below

// routes is the agent's HTTP API. Role routes are added by the roles themselves.
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /v1/agent/self", a.handleSelf)
	mux.Handle("GET /v1/agent/metrics", a.metrics)
	mux.HandleFunc("PUT /v1/agent/leave", a.handleLeave)
	if a.cfg.EnableDebug {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	if a.server != nil {
		a.server.RegisterHTTP(mux)
	}
	if a.proxy != nil {
		a.proxy.RegisterHTTP(mux)
	}
	if a.client != nil {
		a.client.RegisterHTTP(mux)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such route: " + r.Method + " " + r.URL.Path})
	})
	var h http.Handler = mux
	if a.cfg.TLS.VerifyIncoming {
		h = (&tlsutil.HTTPAuthorizer{Datacenter: a.cfg.Datacenter, Public: []string{HealthPath},
			OnRefuse: a.onHTTPRefuse}).Wrap(h)
	}
	return a.withWriteDeadline(h)
}

// onHTTPRefuse records an HTTP API refusal as an aggregated auth_refused event, where the
// agent has somewhere to record it.
func (a *Agent) onHTTPRefuse(route, node, peer, reason string) {
	var agg *events.Aggregator
	switch {
	case a.refusals != nil:
		agg = a.refusals
	case a.remote != nil:
		agg = a.remote
	default:
		a.logger.Debug("HTTP API request refused", "route", route, "peer", peer, "reason", reason)
		return
	}
	agg.Emit(events.Event{Kind: events.AuthRefused, Severity: events.Warning, Node: node, Message: reason,
		Fields: map[string]string{"method": route, "peer": peer, "reason": reason}})
}

// withWriteDeadline gives each response limits.http_write_timeout to be written, plus the time
// the request asks to wait: a blocking query (?index) may legitimately wait up to
// server.MaxBlockingWait and a CPU profile ?seconds. Consul sets no write timeout at all for
// this reason; a per-request deadline keeps blocking queries whole and still bounds a client
// that stops reading.
func (a *Agent) withWriteDeadline(h http.Handler) http.Handler {
	base := a.cfg.Limits.HTTPWriteTimeout
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if extra := requestedWait(r); extra > 0 {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(base + extra))
		}
		h.ServeHTTP(w, r)
	})
}

// requestedWait is how long a request may legitimately take before it writes its answer.
func requestedWait(r *http.Request) time.Duration {
	q := r.URL.Query()
	if q.Has("index") {
		return server.MaxBlockingWait // the server caps every ?wait at this
	}
	if s := q.Get("seconds"); s != "" { // /debug/pprof/profile and /trace
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return time.Duration(min(n, 3600)) * time.Second
		}
	}
	if r.URL.Path == "/debug/pprof/profile" {
		return 30 * time.Second // pprof's default profile length
	}
	return 0
}

type selfResponse struct {
	Config  any      `json:"config"`
	Roles   []string `json:"roles"`
	Version string   `json:"version"`
	Commit  string   `json:"commit,omitempty"`
	Uptime  string   `json:"uptime"`
	Status  any      `json:"status,omitempty"`
}

func (a *Agent) handleSelf(w http.ResponseWriter, r *http.Request) {
	cfg := a.Config()
	status := map[string]any{"limits": a.fds}
	if a.proxy != nil {
		status["proxy"] = a.proxy.Status()
	}
	if a.client != nil {
		status["client"] = a.client.Status()
	}
	writeJSON(w, http.StatusOK, selfResponse{Config: cfg, Roles: cfg.Roles(), Version: version.Version,
		Commit: version.GitCommit, Uptime: time.Since(a.started).Round(time.Second).String(), Status: status})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
