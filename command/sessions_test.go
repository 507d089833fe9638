package command

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/cli"
)

// fakeAgent serves canned /v1/sessions and /v1/events answers and records DELETEs.
func fakeAgent(t *testing.T) (*httptest.Server, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var deleted []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Nullnet-Index", "7")
		_ = json.NewEncoder(w).Encode([]map[string]any{
			{"id": "6c44ee25-dc3f-d345-900f-1fe0c34cc8a6", "service": "redis", "client_ip": "203.0.113.7",
				"proxy_node": "edge-1", "net_id": 101, "replica": map[string]any{"id": "a/redis-1", "node": "host-a"},
				"upstream_ip": "10.0.3.42", "upstream_port": 6379, "state": "active", "uses": 2, "timeout_secs": 30,
				"setup_latency_ms": 2.5},
			{"id": "6d000000-0000-0000-0000-000000000000", "service": "web", "state": "tearing_down", "reason": "forced"},
			{"id": "6e000000-0000-0000-0000-000000000000", "service": "web", "state": "active"},
		})
	})
	mux.HandleFunc("DELETE /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		deleted = append(deleted, r.PathValue("id"))
		mu.Unlock()
		_, _ = w.Write([]byte("{}"))
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Nullnet-Index", "2")
		_ = json.NewEncoder(w).Encode([]map[string]any{
			{"index": 1, "kind": "node_connected", "severity": "info", "node": "host-a"},
			{"index": 2, "kind": "session_torn_down", "severity": "info", "fields": map[string]string{"reason": "idle_timeout"}},
		})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &deleted
}

func TestSessionsCommands(t *testing.T) {
	srv, deleted := fakeAgent(t)
	addr := "-http-addr=" + srv.URL
	cases := []struct {
		name string
		cmd  func(ui cli.Ui) cli.Command
		args []string
		code int
		out  []string
		err  string
	}{
		{"list", func(ui cli.Ui) cli.Command { return &SessionsCommand{UI: ui} }, []string{addr}, 0,
			[]string{"6c44ee25", "redis", "203.0.113.7", "host-a", "101", "10.0.3.42:6379", "active", "tearing_down (forced)"}, ""},
		{"list json", func(ui cli.Ui) cli.Command { return &SessionsCommand{UI: ui} }, []string{addr, "-json"}, 0,
			[]string{`"upstream_port":6379`}, ""},
		{"delete by prefix", func(ui cli.Ui) cli.Command { return &SessionsDeleteCommand{UI: ui} }, []string{addr, "6c4"}, 0,
			[]string{"6c44ee25-dc3f-d345-900f-1fe0c34cc8a6 is being torn down"}, ""},
		{"delete ambiguous", func(ui cli.Ui) cli.Command { return &SessionsDeleteCommand{UI: ui} }, []string{addr, "6"}, 1,
			nil, "matches 2 sessions"},
		{"delete unknown", func(ui cli.Ui) cli.Command { return &SessionsDeleteCommand{UI: ui} }, []string{addr, "ff"}, 1,
			nil, "No active session"},
		{"delete no id", func(ui cli.Ui) cli.Command { return &SessionsDeleteCommand{UI: ui} }, []string{addr}, 2, nil, "exactly one"},
		{"events", func(ui cli.Ui) cli.Command { return &EventsCommand{UI: ui} }, []string{addr}, 0,
			[]string{"node_connected node=host-a", `session_torn_down reason="idle_timeout"`}, ""},
		{"events json", func(ui cli.Ui) cli.Command { return &EventsCommand{UI: ui} }, []string{addr, "-json"}, 0,
			[]string{`{"index":1,`}, ""},
		{"events bad severity", func(ui cli.Ui) cli.Command { return &EventsCommand{UI: ui} }, []string{addr, "-severity=loud"}, 2,
			nil, "invalid -severity"},
		{"unreachable", func(ui cli.Ui) cli.Command { return &SessionsCommand{UI: ui} }, []string{"-http-addr=127.0.0.1:1"}, 1,
			nil, "cannot reach the nullnet agent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ui := cli.NewMockUi()
			if code := c.cmd(ui).Run(c.args); code != c.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, c.code, ui.ErrorWriter.String())
			}
			for _, want := range c.out {
				if !strings.Contains(ui.OutputWriter.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, ui.OutputWriter.String())
				}
			}
			if c.err != "" && !strings.Contains(ui.ErrorWriter.String(), c.err) {
				t.Errorf("stderr lacks %q: %s", c.err, ui.ErrorWriter.String())
			}
		})
	}
	if len(*deleted) != 1 || (*deleted)[0] != "6c44ee25-dc3f-d345-900f-1fe0c34cc8a6" {
		t.Fatalf("deleted %v", *deleted)
	}
}
