package server

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/nullnet/nullnet/config"
)

// registerStacksHTTP adds GET /v1/stacks and GET /v1/port-mappings. Both answer from what this
// server read back from Consul, so every server gives the same answer.
func (s *Server) registerStacksHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/stacks", s.handleStacks)
	mux.HandleFunc("GET /v1/port-mappings", s.handlePortMappings)
}

// stackView is one stack in GET /v1/stacks.
type stackView struct {
	Name     string        `json:"name"`
	Services []serviceView `json:"services"`
}

// serviceView is one stack service in GET /v1/stacks.
type serviceView struct {
	Service    string `json:"service"`
	Protocol   string `json:"protocol"`
	ListenPort int    `json:"listen_port,omitempty"`
	// EntryPoint is true when the proxies may reach the service (a timeout is set).
	EntryPoint bool `json:"entry_point"`
	// TimeoutSecs is the idle timeout (absent for backend-only services; 0 = never).
	TimeoutSecs *uint64 `json:"timeout_secs,omitempty"`
	// Policy is the service's policy in force (absent when none).
	Policy *config.ServicePolicy `json:"policy,omitempty"`
}

// handleStacks serves the definitions grouped by stack, sorted by names.
func (s *Server) handleStacks(w http.ResponseWriter, r *http.Request) {
	index, wait, err := parseBlocking(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defs, version := s.waitDefinitions(r.Context(), index, wait)
	byStack := map[string]*stackView{}
	for _, d := range defs {
		st := byStack[d.Stack]
		if st == nil {
			st = &stackView{Name: d.Stack}
			byStack[d.Stack] = st
		}
		sv := serviceView{Service: d.Service, Protocol: d.Protocol, ListenPort: d.ListenPort, EntryPoint: d.EntryPoint}
		if d.EntryPoint {
			secs := uint64(d.Timeout / time.Second)
			sv.TimeoutSecs = &secs
		}
		if d.PolicyDigest != "" {
			p := d.Policy
			sv.Policy = &p
		}
		st.Services = append(st.Services, sv) // defs are sorted by service already
	}
	out := make([]stackView, 0, len(byStack))
	for _, st := range byStack {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSONIndex(w, version, out)
}

// waitDefinitions blocks until the definitions' version is above index (when index > 0).
func (s *Server) waitDefinitions(ctx context.Context, index uint64, wait time.Duration) ([]Definition, uint64) {
	defs, version, changed := s.defs.All()
	if index == 0 || version > index {
		return defs, version
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for version <= index {
		select {
		case <-changed:
		case <-ctx.Done():
			return defs, version
		case <-timer.C:
			return defs, version
		}
		defs, version, changed = s.defs.All()
	}
	return defs, version
}

// handlePortMappings serves the port table; the index is the table's version.
func (s *Server) handlePortMappings(w http.ResponseWriter, r *http.Request) {
	index, wait, err := parseBlocking(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var table []Mapping
	var version uint64
	if index == 0 {
		table, version, _ = s.table.snapshot()
	} else {
		table, version = s.table.wait(r.Context(), index, wait)
	}
	if version == 0 {
		// Unknown is not empty: a client must not act on a table this server has not read yet.
		writeError(w, http.StatusServiceUnavailable, "the port table is not known yet: waiting for the first answer from Consul")
		return
	}
	// http services ride in the table for their settings; this route lists the listeners.
	writeJSONIndex(w, version, portsOnly(table))
}
