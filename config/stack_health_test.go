package config

import (
	"fmt"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestParseStacks_CloseOnUnhealthy(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        bool
		diag        string // "line:col summary"
	}{
		{"true", "true", true, ""},
		{"false", "false", false, ""},
		{"string", `"yes"`, false, "4:26 Invalid close_on_unhealthy"},
		{"number", "1", false, "4:26 Invalid close_on_unhealthy"},
		{"null", "null", false, "4:26 Invalid close_on_unhealthy"},
		{"reference", "yes", false, "4:26 Variables not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf("stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    close_on_unhealthy = %s\n    listen_port = 5432\n    timeout = 1\n  }\n}\n", tc.value)
			set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(src)}}, StackRules{})
			var got string
			for _, d := range set.Diags {
				if d.Severity == hcl.DiagError && d.Subject != nil {
					got = fmt.Sprintf("%d:%d %s", d.Subject.Start.Line, d.Subject.Start.Column, d.Summary)
					break
				}
			}
			if got != tc.diag {
				t.Fatalf("diagnostic %q, want %q (%s)", got, tc.diag, FormatDiagnostics(set.Files, set.Diags))
			}
			if tc.diag != "" {
				return
			}
			svcs := set.Services()
			if len(svcs) != 1 || svcs[0].Policy.CloseOnUnhealthy != tc.want {
				t.Fatalf("services %+v", svcs)
			}
			if tc.want == svcs[0].Policy.IsZero() {
				t.Fatal("IsZero disagrees with close_on_unhealthy")
			}
		})
	}
}
