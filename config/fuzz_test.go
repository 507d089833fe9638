package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadAgentConfig: no input, in either syntax, may crash the loader; every rejected input
// yields at least one error diagnostic.
func FuzzLoadAgentConfig(f *testing.F) {
	seeds := []string{
		`node_name = "n1"`,
		"server {\n  enabled = true\n  stacks_dir = \"/x\"\n  network = \"direct\"\n  setup_timeout = \"3s\"\n}\n",
		"client {\n  service \"sshd\" {\n    stack = \"infra\"\n    port = 22\n  }\n}\n",
		"ports { http = 1\n grpc = 2 }",
		"proxy { udp_idle_timeout = 1e300 }",
		"proxy { dial_timeout = -1 }",
		`{"server": {"enabled": true, "setup_timeout": 5}}`,
		`{"client": {"service": {"x": {"port": 1, "stack": "s"}}}}`,
		"server {",
		"\x00\xff",
		`telemetry { prometheus_retention_time = "9999999999999h" }`,
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body string, asJSON bool) {
		name := "c.hcl"
		if asJSON {
			name = "c.json"
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		r := Load([]Source{{Path: p}}, false)
		if r.Config == nil {
			t.Fatal("Load must always return a configuration")
		}
		_ = FormatDiagnostics(r.Files, r.Diags) // rendering must not crash either
	})
}
