package server

import (
	"errors"
	"net/http"

	"github.com/nullnet/nullnet/agent/server/session"
)

// handleSessions serves GET /v1/sessions: every session, oldest first, tearing-down ones
// included (their net id is still held), and ?service= filters by service.
func (p *plane) handleSessions(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	all := p.table.List()
	out := make([]session.Session, 0, len(all))
	for _, s := range all {
		if svc == "" || s.Service == svc {
			out = append(out, s)
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
	writeJSON(w, http.StatusOK, s)
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
	writeJSON(w, http.StatusOK, s)
}
