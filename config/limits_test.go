package config

import (
	"strings"
	"testing"
	"time"
)

func TestLimitsAndClientAddr(t *testing.T) {
	dir := t.TempDir()
	def := Load([]Source{{Path: write(t, dir, "a.hcl", "node_name = \"n\"\n")}}, false)
	if def.Diags.HasErrors() {
		t.Fatal(diagText(def))
	}
	c := def.Config
	if c.ClientAddr != "127.0.0.1" || c.Limits.HTTPMaxConnsPerClient != 200 || c.Limits.HTTPMaxConns != 1024 ||
		c.Limits.HTTPIdleTimeout != 60*time.Second || c.Limits.HTTPReadTimeout != 30*time.Second ||
		c.Limits.HTTPWriteTimeout != 30*time.Second || c.Limits.GRPCMaxConcurrentStreams != 1024 ||
		c.Limits.GRPCMaxStreamsPerClient != 4096 {
		t.Fatalf("defaults: client_addr %q, limits %+v", c.ClientAddr, c.Limits)
	}
	set := Load([]Source{{Path: write(t, dir, "b.hcl", `
client_addr = "0.0.0.0"
limits {
  http_max_conns_per_client = 20
  http_idle_timeout         = "5s"
  grpc_max_streams_per_client = 7
}
`)}}, false)
	if set.Diags.HasErrors() {
		t.Fatal(diagText(set))
	}
	if l := set.Config.Limits; set.Config.ClientAddr != "0.0.0.0" || l.HTTPMaxConnsPerClient != 20 ||
		l.HTTPIdleTimeout != 5*time.Second || l.GRPCMaxStreamsPerClient != 7 || l.HTTPMaxConns != 1024 {
		t.Fatalf("set: %q %+v", set.Config.ClientAddr, l)
	}
	for _, tc := range []struct{ body, want string }{
		{"client_addr = \"localhost\"\n", "b.hcl:1:15: error: Invalid client_addr"},
		{"limits {\n  http_max_conns = -1\n}\n", "Invalid connection limit; limits.http_max_conns = -1"},
		{"limits {\n  grpc_max_concurrent_streams = -5\n}\n", "limits.grpc_max_concurrent_streams = -5"},
		{"limits {\n  http_read_timeout = \"-1s\"\n}\n", "Invalid duration"},
		{"limits {\n  bogus = 1\n}\n", "Unsupported argument"},
	} {
		r := Load([]Source{{Path: write(t, dir, "b.hcl", tc.body)}}, false)
		if !r.Diags.HasErrors() || !strings.Contains(diagText(r), tc.want) {
			t.Errorf("%q: want an error containing %q, got:\n%s", tc.body, tc.want, diagText(r))
		}
	}
}
