package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

func TestLoadStacks_Valid(t *testing.T) {
	set := LoadStacks("testdata/stacks/valid", StackRules{ReservedPorts: map[int]string{80: "the proxies' HTTP listener"}})
	if set.Diags.HasErrors() {
		t.Fatalf("unexpected diagnostics:\n%s", FormatDiagnostics(set.Files, set.Diags))
	}
	if len(set.Stacks) != 2 || set.Stacks[0].Name != "my-app" || set.Stacks[1].Name != "other" {
		t.Fatalf("stacks = %+v", set.Stacks)
	}
	got := map[string]StackService{}
	for _, s := range set.Services() {
		got[s.Name] = s
	}
	tests := []struct {
		name       string
		stack      string
		protocol   string
		port       int
		entryPoint bool
		timeout    time.Duration
	}{
		{"redis.internal", "my-app", "tcp", 6379, true, 0},
		{"dns.internal", "my-app", "udp", 53, true, 30 * time.Second},
		{"color.com", "my-app", "http", 0, true, 5 * time.Minute},
		{"fs.color.com", "my-app", "http", 0, false, 0},
		{"pg.other", "other", "tcp", 5432, true, 90 * time.Second},
		{"syslog.other", "other", "udp", 5432, true, 60 * time.Second},
	}
	if len(got) != len(tests) {
		t.Fatalf("got %d services, want %d", len(got), len(tests))
	}
	for _, tc := range tests {
		s, ok := got[tc.name]
		if !ok {
			t.Errorf("service %s missing", tc.name)
			continue
		}
		if s.Stack != tc.stack || s.Protocol != tc.protocol || s.ListenPort != tc.port ||
			s.EntryPoint != tc.entryPoint || s.Timeout != tc.timeout {
			t.Errorf("%s = %+v, want %+v", tc.name, s, tc)
		}
	}
	if set.Fingerprint == "" {
		t.Error("no fingerprint")
	}
}

func TestLoadStacks_ConflictAcrossFiles(t *testing.T) {
	set := LoadStacks("testdata/stacks/conflict", StackRules{})
	if len(set.Diags) != 1 {
		t.Fatalf("want 1 diagnostic, got:\n%s", FormatDiagnostics(set.Files, set.Diags))
	}
	d := set.Diags[0]
	pos := fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	if pos != "testdata/stacks/conflict/b.hcl:2:3" {
		t.Errorf("position %s", pos)
	}
	for _, want := range []string{`"redis.b" (stack "b")`, `"redis.a" (stack "a")`, "a.hcl:2:3"} {
		if !strings.Contains(d.Detail, want) {
			t.Errorf("detail %q lacks %q", d.Detail, want)
		}
	}
}

func TestParseStacks_Errors(t *testing.T) {
	rules := StackRules{ReservedPorts: map[int]string{80: "the proxies' HTTP listener", 4700: "the agent's HTTP API"}}
	tests := []struct {
		name  string
		files map[string]string
		// want is "file:line:col summary" for each diagnostic, in order.
		want []string
	}{
		{"syntax error", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n"},
			[]string{"a.hcl:2:15 Unclosed configuration block"}},
		{"unknown top-level block", map[string]string{"a.hcl": "stak \"a\" {}\n"},
			[]string{"a.hcl:1:1 Unsupported block type"}},
		{"unknown key", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    prot = \"tcp\"\n  }\n}\n"},
			[]string{"a.hcl:3:5 Unsupported argument"}},
		{"unknown key in stack", map[string]string{"a.hcl": "stack \"a\" {\n  timeout = 3\n}\n"},
			[]string{"a.hcl:2:3 Unsupported argument"}},
		{"bad protocol", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"sctp\"\n  }\n}\n"},
			[]string{"a.hcl:3:16 Invalid protocol"}},
		{"tcp without port and timeout", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n  }\n}\n"},
			[]string{"a.hcl:2:3 Missing listen_port", "a.hcl:2:3 Missing timeout"}},
		{"udp without timeout", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"udp\"\n    listen_port = 53\n  }\n}\n"},
			[]string{"a.hcl:2:3 Missing timeout"}},
		{"http with port", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    listen_port = 8080\n  }\n}\n"},
			[]string{"a.hcl:3:5 Unexpected listen_port"}},
		{"acme not a bool", map[string]string{"a.hcl": "stack \"a\" {\n  service \"a.example.com\" {\n    timeout = 1\n    acme = \"yes\"\n  }\n}\n"},
			[]string{"a.hcl:4:12 Invalid value for \"acme\""}},
		{"acme on tcp", map[string]string{"a.hcl": "stack \"a\" {\n  service \"a.example.com\" {\n    protocol = \"tcp\"\n    listen_port = 99\n    timeout = 1\n    acme = true\n  }\n}\n"},
			[]string{"a.hcl:6:5 Unexpected acme"}},
		{"acme on backend", map[string]string{"a.hcl": "stack \"a\" {\n  service \"a.example.com\" {\n    acme = true\n  }\n}\n"},
			[]string{"a.hcl:3:5 acme on a backend-only service"}},
		{"acme without a domain", map[string]string{"a.hcl": "stack \"a\" {\n  service \"web\" {\n    timeout = 1\n    acme = true\n  }\n}\n"},
			[]string{"a.hcl:4:5 acme needs a domain name"}},
		{"port out of range", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = 70000\n    timeout = 1\n  }\n}\n"},
			[]string{"a.hcl:4:19 Invalid listen_port"}},
		{"port zero", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = 0\n    timeout = 1\n  }\n}\n"},
			[]string{"a.hcl:4:19 Invalid listen_port"}},
		{"port not a number", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = \"http\"\n    timeout = 1\n  }\n}\n"},
			[]string{"a.hcl:4:19 Invalid listen_port"}},
		{"reserved port", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = 80\n    timeout = 1\n  }\n}\n"},
			[]string{"a.hcl:2:3 Reserved listen_port"}},
		{"bad timeout", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    timeout = \"soon\"\n  }\n}\n"},
			[]string{"a.hcl:3:15 Invalid duration for \"timeout\""}},
		{"negative timeout", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    timeout = -1\n  }\n}\n"},
			[]string{"a.hcl:3:15 Invalid duration for \"timeout\""}},
		{"sub-second timeout", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    timeout = \"1500ms\"\n  }\n}\n"},
			[]string{"a.hcl:3:15 Invalid timeout"}},
		{"bad service name", map[string]string{"a.hcl": "stack \"a\" {\n  service \"Bad_Name\" {}\n}\n"},
			[]string{"a.hcl:2:11 Invalid service name"}},
		{"bad stack name", map[string]string{"a.hcl": "stack \"-a\" {}\n"},
			[]string{"a.hcl:1:7 Invalid stack name"}},
		{"duplicate stack across files", map[string]string{"a.hcl": "stack \"s\" {}\n", "b.hcl": "\nstack \"s\" {}\n"},
			[]string{"b.hcl:2:1 Duplicate stack"}},
		{"duplicate service across stacks", map[string]string{
			"a.hcl": "stack \"s1\" {\n  service \"x\" {}\n}\n", "b.hcl": "stack \"s2\" {\n  service \"x\" {}\n}\n"},
			[]string{"b.hcl:2:3 Duplicate service"}},
		{"port conflict", map[string]string{"a.hcl": `stack "a" {
  service "x" {
    protocol    = "udp"
    listen_port = 53
    timeout     = 1
  }
  service "y" {
    protocol    = "udp"
    listen_port = 53
    timeout     = 1
  }
}
`}, []string{"a.hcl:7:3 Conflicting listen_port"}},
		{"every error reported", map[string]string{"a.hcl": "stack \"a\" {\n  service \"x\" {\n    protocol = \"sctp\"\n  }\n}\n",
			"b.hcl": "stack \"b\" {\n  service \"y\" {\n    bogus = 1\n  }\n}\n"},
			[]string{"a.hcl:3:16 Invalid protocol", "b.hcl:3:5 Unsupported argument"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var files []StackFile
			for _, name := range []string{"a.hcl", "b.hcl"} {
				if src, ok := tc.files[name]; ok {
					files = append(files, StackFile{Path: name, Bytes: []byte(src)})
				}
			}
			set := ParseStacks(files, rules)
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

func TestParseStacks_UDPMayUseReservedTCPPort(t *testing.T) {
	src := "stack \"a\" {\n  service \"x\" {\n    protocol = \"udp\"\n    listen_port = 80\n    timeout = 1\n  }\n}\n"
	set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(src)}}, StackRules{ReservedPorts: map[int]string{80: "http"}})
	if set.Diags.HasErrors() {
		t.Fatalf("unexpected: %s", FormatDiagnostics(set.Files, set.Diags))
	}
}

func TestStackFingerprint(t *testing.T) {
	a := []StackFile{{Path: "a.hcl", Bytes: []byte("x")}}
	b := []StackFile{{Path: "a.hcl", Bytes: []byte("y")}}
	c := []StackFile{{Path: "b.hcl", Bytes: []byte("x")}}
	if StackFingerprint(a) == StackFingerprint(b) || StackFingerprint(a) == StackFingerprint(c) {
		t.Error("fingerprints collide")
	}
	if StackFingerprint(a) != StackFingerprint([]StackFile{{Path: "a.hcl", Bytes: []byte("x")}}) {
		t.Error("fingerprint not stable")
	}
}

func TestParseStacks_ACME(t *testing.T) {
	src := "stack \"a\" {\n  service \"a.example.com\" {\n    timeout = 60\n    acme = true\n  }\n" +
		"  service \"b.example.com\" {\n    timeout = 60\n    acme = false\n  }\n}\n"
	set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(src)}}, StackRules{})
	if set.Diags.HasErrors() {
		t.Fatalf("diagnostics:\n%s", FormatDiagnostics(set.Files, set.Diags))
	}
	got := map[string]bool{}
	for _, s := range set.Services() {
		got[s.Name] = s.Policy.ACME
	}
	if !got["a.example.com"] || got["b.example.com"] {
		t.Fatalf("acme per service = %v", got)
	}
}
