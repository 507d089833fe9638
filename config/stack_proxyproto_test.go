package config

import (
	"strings"
	"testing"
)

func TestParseStacks_SendProxyProtocol(t *testing.T) {
	svc := func(proto, port, v string) string {
		return "stack \"s\" {\n  service \"a.b\" {\n    protocol = \"" + proto + "\"\n" + port +
			"    timeout = 30\n    send_proxy_protocol = " + v + "\n  }\n}\n"
	}
	const lp = "    listen_port = 9000\n"
	for _, tc := range []struct {
		name, src, want, err string // err: "file:line:col: summary" prefix of the diagnostic
	}{
		{"tcp v1", svc("tcp", lp, `"v1"`), "v1", ""},
		{"tcp v2", svc("tcp", lp, `"v2"`), "v2", ""},
		{"udp v2", svc("udp", lp, `"v2"`), "v2", ""},
		{"udp v1", svc("udp", lp, `"v1"`), "", "a.hcl:6:27: Invalid send_proxy_protocol"},
		{"http", svc("http", "", `"v2"`), "", "a.hcl:5:5: Unexpected send_proxy_protocol"},
		{"unknown version", svc("tcp", lp, `"v3"`), "", "a.hcl:6:27: Invalid send_proxy_protocol"},
		{"not a string", svc("tcp", lp, `2`), "", "a.hcl:6:27"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(tc.src)}}, StackRules{})
			if tc.err == "" {
				if set.Diags.HasErrors() {
					t.Fatalf("diagnostics: %s", FormatDiagnostics(set.Files, set.Diags))
				}
				if got := set.Services()[0].Policy.SendProxyProtocol; got != tc.want {
					t.Fatalf("SendProxyProtocol = %q, want %q", got, tc.want)
				}
				return
			}
			if len(set.Diags) != 1 {
				t.Fatalf("want one diagnostic, got %s", FormatDiagnostics(set.Files, set.Diags))
			}
			d := set.Diags[0]
			got := pos(*d.Subject) + ": " + d.Summary
			if !strings.HasPrefix(got, tc.err) {
				t.Fatalf("got %q, want prefix %q", got, tc.err)
			}
		})
	}
}
