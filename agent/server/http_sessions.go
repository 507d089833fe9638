package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/nullnet/nullnet/agent/server/session"
)

// handleSessions serves GET /v1/sessions: every session, oldest first, tearing-down ones
// included (their net id is still held), and ?service= filters by service.
func (p *plane) handleSessions(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	all := p.table.List()
	out := make([]apiSession, 0, len(all))
	for _, s := range all {
		if svc == "" || s.Service == svc {
			out = append(out, toAPISession(s))
		}
	}
	writeJSONIndex(w, p.s.events.Index(), out)
}

// handleSession serves GET /v1/sessions/{id}.
func (p *plane) handleSession(w http.ResponseWriter, r *http.Request) {
	s, ok := p.table.Get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no session "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, toAPISession(s))
}

// handleDeleteSession serves DELETE /v1/sessions/{id}: a forced teardown (reason "forced").
// It answers once the teardown started; the session is listed as tearing_down until both
// nodes acked.
func (p *plane) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	s, err := p.table.TearDown(r.PathValue("id"), session.ReasonForced)
	if errors.Is(err, session.ErrUnknownSession) {
		writeError(w, http.StatusNotFound, "no active session "+r.PathValue("id"))
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, toAPISession(s))
}

// apiSession is a session as the HTTP API shows it: durations in milliseconds / seconds
// rather than Go's nanoseconds.
type apiSession struct {
	ID             string          `json:"id"`
	Service        string          `json:"service"`
	ClientIP       string          `json:"client_ip"`
	ProxyNode      string          `json:"proxy_node"`
	NetID          uint32          `json:"net_id,omitempty"`
	Replica        session.Replica `json:"replica"`
	UpstreamIP     string          `json:"upstream_ip,omitempty"`
	UpstreamPort   int             `json:"upstream_port,omitempty"`
	State          session.State   `json:"state"`
	Created        time.Time       `json:"created"`
	SetupLatencyMS float64         `json:"setup_latency_ms"`
	Uses           int             `json:"uses"`
	IdleSince      *time.Time      `json:"idle_since,omitempty"`
	TimeoutSecs    float64         `json:"timeout_secs"`
	Reason         string          `json:"reason,omitempty"`
}

func toAPISession(s session.Session) apiSession {
	return apiSession{ID: s.ID, Service: s.Service, ClientIP: s.ClientIP, ProxyNode: s.ProxyNode, NetID: s.NetID,
		Replica: s.Replica, UpstreamIP: s.UpstreamIP, UpstreamPort: s.UpstreamPort, State: s.State, Created: s.Created,
		SetupLatencyMS: float64(s.SetupLatency.Microseconds()) / 1000, Uses: s.Uses, IdleSince: s.IdleSince,
		TimeoutSecs: s.Timeout.Seconds(), Reason: s.Reason}
}
