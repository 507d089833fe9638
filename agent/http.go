package agent

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nullnet/nullnet/agent/version"
)

// routes is the agent's HTTP API. Role routes are added by the roles themselves.
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
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
	return mux
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
	status := map[string]any{}
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
