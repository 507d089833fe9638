package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

const routeTargets = `stack "b" {
  service "api.example.com" {
    timeout = 60
  }
  service "static.example.com" {
    timeout = 60
  }
  service "backend.example.com" {}
  service "db.example.com" {
    protocol    = "tcp"
    listen_port = 5432
    timeout     = 60
  }
}
`

func TestParseStacks_Routes(t *testing.T) {
	src := `stack "a" {
  service "www.example.com" {
    timeout = 30
    route "/api/" {
      service      = "api.example.com"
      strip_prefix = true
    }
    route "/static" {
      service = "static.example.com"
    }
  }
}
`
	set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(src)}, {Path: "b.hcl", Bytes: []byte(routeTargets)}}, StackRules{})
	if set.Diags.HasErrors() {
		t.Fatalf("unexpected: %s", FormatDiagnostics(set.Files, set.Diags))
	}
	var www StackService
	for _, s := range set.Services() {
		if s.Name == "www.example.com" {
			www = s
		}
	}
	want := []HTTPRoute{{PathPrefix: "/api/", Service: "api.example.com", StripPrefix: true},
		{PathPrefix: "/static", Service: "static.example.com"}}
	if !reflect.DeepEqual(www.Policy.Routes, want) {
		t.Errorf("routes = %+v, want %+v", www.Policy.Routes, want)
	}
}

func TestParseStacks_RouteErrors(t *testing.T) {
	svc := func(body string) string {
		return "stack \"a\" {\n  service \"www.example.com\" {\n    timeout = 30\n" + body + "  }\n}\n"
	}
	tests := []struct {
		name, src string
		want      []string // "file:line:col summary"
	}{
		{"prefix without slash", svc("    route \"api/\" {\n      service = \"api.example.com\"\n    }\n"),
			[]string{"a.hcl:4:11 Invalid route prefix"}},
		{"prefix with query", svc("    route \"/api?x=1\" {\n      service = \"api.example.com\"\n    }\n"),
			[]string{"a.hcl:4:11 Invalid route prefix"}},
		{"escaped prefix", svc("    route \"/a%20b\" {\n      service = \"api.example.com\"\n    }\n"),
			[]string{"a.hcl:4:11 Invalid route prefix"}},
		{"duplicate prefix", svc("    route \"/api/\" {\n      service = \"api.example.com\"\n    }\n    route \"/api/\" {\n      service = \"static.example.com\"\n    }\n"),
			[]string{"a.hcl:7:11 Duplicate route"}},
		{"missing service", svc("    route \"/api/\" {\n    }\n"),
			[]string{"a.hcl:4:19 Missing required argument"}},
		{"unknown key", svc("    route \"/api/\" {\n      service = \"api.example.com\"\n      strip = true\n    }\n"),
			[]string{"a.hcl:6:7 Unsupported argument"}},
		{"strip_prefix not a bool", svc("    route \"/api/\" {\n      service = \"api.example.com\"\n      strip_prefix = \"yes\"\n    }\n"),
			[]string{"a.hcl:6:22 Invalid strip_prefix"}},
		{"bad service name", svc("    route \"/api/\" {\n      service = \"API!\"\n    }\n"),
			[]string{"a.hcl:5:17 Invalid route service"}},
		{"unknown target", svc("    route \"/api/\" {\n      service = \"nosuch.example.com\"\n    }\n"),
			[]string{"a.hcl:5:17 Unknown route service"}},
		{"tcp target", svc("    route \"/db/\" {\n      service = \"db.example.com\"\n    }\n"),
			[]string{"a.hcl:5:17 Invalid route service"}},
		{"backend-only target", svc("    route \"/be/\" {\n      service = \"backend.example.com\"\n    }\n"),
			[]string{"a.hcl:5:17 Unreachable route service"}},
		{"route on a tcp service", "stack \"a\" {\n  service \"t\" {\n    protocol = \"tcp\"\n    listen_port = 7000\n    timeout = 1\n    route \"/x/\" {\n      service = \"api.example.com\"\n    }\n  }\n}\n",
			[]string{"a.hcl:6:5 Unexpected route"}},
		{"route on a backend-only service", "stack \"a\" {\n  service \"www.example.com\" {\n    route \"/x/\" {\n      service = \"api.example.com\"\n    }\n    route \"/y/\" {\n      service = \"api.example.com\"\n    }\n  }\n}\n",
			[]string{"a.hcl:3:5 Route on a backend-only service"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(tc.src)}, {Path: "b.hcl", Bytes: []byte(routeTargets)}}, StackRules{})
			var got []string
			for _, d := range set.Diags {
				if d.Severity != hcl.DiagError || d.Subject == nil {
					t.Fatalf("diagnostic without position or not an error: %v", d)
				}
				got = append(got, fmt.Sprintf("%s:%d:%d %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("diagnostics:\n%s\nwant:\n%s\nfull:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"),
					FormatDiagnostics(set.Files, set.Diags))
			}
		})
	}
}

func TestParseStacks_TooManyRoutes(t *testing.T) {
	var b strings.Builder
	b.WriteString("stack \"a\" {\n  service \"www.example.com\" {\n    timeout = 30\n")
	for i := range MaxRoutesPerService + 2 {
		fmt.Fprintf(&b, "    route \"/r%d/\" {\n      service = \"api.example.com\"\n    }\n", i)
	}
	b.WriteString("  }\n}\n")
	set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(b.String())}, {Path: "b.hcl", Bytes: []byte(routeTargets)}}, StackRules{})
	if len(set.Diags) != 1 || set.Diags[0].Summary != "Too many routes" {
		t.Fatalf("diagnostics: %s", FormatDiagnostics(set.Files, set.Diags))
	}
}
