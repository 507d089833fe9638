package server

import (
	"net/http"

	"github.com/nullnet/nullnet/agent/events"
)

// handleEvents serves GET /v1/events: the events after ?index (all kept ones without it),
// oldest first. With ?index=N it blocks, like Consul, until an event newer than N exists or
// ?wait passes; X-Nullnet-Index carries the newest index, to pass back as the next ?index.
// ?kind= and ?severity= filter the answer (the index still advances past filtered events).
func (p *plane) handleEvents(w http.ResponseWriter, r *http.Request) {
	index, wait, err := parseBlocking(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var evs []events.Event
	var idx uint64
	if index == 0 {
		evs, idx = p.s.events.Since(0)
	} else {
		evs, idx = p.s.events.Wait(r.Context(), index, wait)
	}
	kind, sev := r.URL.Query().Get("kind"), r.URL.Query().Get("severity")
	out := make([]events.Event, 0, len(evs))
	for _, e := range evs {
		if (kind == "" || e.Kind == kind) && (sev == "" || string(e.Severity) == sev) {
			out = append(out, e)
		}
	}
	writeJSONIndex(w, idx, out)
}
