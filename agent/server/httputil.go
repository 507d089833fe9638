package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Blocking-query conventions of the HTTP API, shared by every route that supports them. They
// follow Consul's: ?index=N blocks until the resource's index is above N or the wait passes, the
// current index is returned in a header, and the wait is capped.
const (
	// IndexHeader carries the index of the returned state.
	IndexHeader = "X-Nullnet-Index"
	// defaultBlockingWait applies when ?index is given without ?wait.
	defaultBlockingWait = 5 * time.Minute
	// maxBlockingWait caps ?wait, as Consul does, so a client cannot pin a goroutine forever.
	maxBlockingWait = 10 * time.Minute
	// MaxBlockingWait is maxBlockingWait for the agent's HTTP server, which extends a blocking
	// request's write deadline by it.
	MaxBlockingWait = maxBlockingWait
)

// parseBlocking reads ?index and ?wait. index 0 means "do not block". wait accepts a Go duration
// ("30s") or a bare number of seconds; it defaults to 5 min and is capped at 10 min. A small
// jitter is not added: unlike Consul, the servers do not fear a thundering herd of thousands.
func parseBlocking(r *http.Request) (index uint64, wait time.Duration, err error) {
	q := r.URL.Query()
	if s := q.Get("index"); s != "" {
		index, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("invalid index %q: must be a non-negative integer", s)
		}
	}
	wait = defaultBlockingWait
	if s := q.Get("wait"); s != "" {
		if n, convErr := strconv.ParseUint(s, 10, 32); convErr == nil {
			wait = time.Duration(n) * time.Second
		} else if wait, err = time.ParseDuration(s); err != nil || wait < 0 {
			return 0, 0, fmt.Errorf("invalid wait %q: use a duration such as \"30s\"", s)
		}
	}
	if wait > maxBlockingWait {
		wait = maxBlockingWait
	}
	return index, wait, nil
}

// writeJSONIndex writes v as indented JSON with the index header.
func writeJSONIndex(w http.ResponseWriter, idx uint64, v any) {
	w.Header().Set(IndexHeader, strconv.FormatUint(idx, 10))
	writeJSON(w, http.StatusOK, v)
}

// writeJSON writes v as indented JSON with the given status.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// apiError is the body of every error response.
type apiError struct {
	Error string `json:"error"`
}

// writeError writes {"error": msg} with the given status.
func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(apiError{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
