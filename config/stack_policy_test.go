package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseStacks_ClientPolicy(t *testing.T) {
	src := `stack "a" {
  service "db.a" {
    protocol                   = "tcp"
    listen_port                = 5432
    timeout                    = 60
    allow                      = ["203.0.113.0/24", "2001:DB8::/32", "192.0.2.7", "::ffff:10.0.0.0/104", "203.0.113.0/24"]
    deny                       = ["203.0.113.9"]
    max_connections_per_client = 4
    new_connections_per_client = "600/m"
    max_sessions               = 1000
  }
  service "dns.a" {
    protocol                   = "udp"
    listen_port                = 53
    timeout                    = 30
    new_connections_per_client = "20/s burst 40"
  }
  service "web.a" {
    timeout = 30
    deny    = ["2001:db8::1"]
  }
}
`
	set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(src)}}, StackRules{})
	if set.Diags.HasErrors() {
		t.Fatalf("unexpected: %s", FormatDiagnostics(set.Files, set.Diags))
	}
	got := map[string]ServicePolicy{}
	for _, s := range set.Services() {
		got[s.Name] = s.Policy
	}
	want := map[string]ServicePolicy{
		"db.a": {Allow: []string{"203.0.113.0/24", "2001:db8::/32", "192.0.2.7/32", "10.0.0.0/8"}, Deny: []string{"203.0.113.9/32"},
			MaxConnectionsPerClient: 4, NewConnectionsPerClient: Rate{PerSecond: 10, Burst: 10}, MaxSessions: 1000},
		"dns.a": {NewConnectionsPerClient: Rate{PerSecond: 20, Burst: 40}},
		"web.a": {Deny: []string{"2001:db8::1/128"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("policies:\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseStacks_ClientPolicyErrors(t *testing.T) {
	svc := func(body string) string {
		return "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = 7000\n    timeout = 1\n" + body + "  }\n}\n"
	}
	tests := []struct {
		name, src string
		want      []string
	}{
		{"bad cidr", svc("    allow = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n"), []string{"a.hcl:6:28 Invalid allow entry"}},
		{"not a list", svc("    deny = \"10.0.0.0/8\"\n"), []string{"a.hcl:6:12 Invalid deny"}},
		{"not a string", svc("    deny = [10]\n"), []string{"a.hcl:6:13 Invalid deny entry"}},
		{"hostname", svc("    allow = [\"example.com\"]\n"), []string{"a.hcl:6:14 Invalid allow entry"}},
		{"bad rate", svc("    new_connections_per_client = \"20/d\"\n"), []string{"a.hcl:6:34 Invalid new_connections_per_client"}},
		{"rate not a string", svc("    new_connections_per_client = 20\n"), []string{"a.hcl:6:34 Invalid value for \"new_connections_per_client\""}},
		{"zero max", svc("    max_sessions = 0\n"), []string{"a.hcl:6:20 Invalid max_sessions"}},
		{"fraction", svc("    max_connections_per_client = 1.5\n"), []string{"a.hcl:6:34 Invalid max_connections_per_client"}},
		{"backend only", "stack \"a\" {\n  service \"x\" {\n    allow = [\"10.0.0.0/8\"]\n  }\n}\n", []string{"a.hcl:3:5 Unexpected allow"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(tc.src)}}, StackRules{})
			var got []string
			for _, d := range set.Diags {
				got = append(got, fmt.Sprintf("%s:%d:%d %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("diagnostics:\n%s\nwant:\n%s\nfull:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"),
					FormatDiagnostics(set.Files, set.Diags))
			}
		})
	}
}

func TestParseStacks_ClientListTooLong(t *testing.T) {
	var b strings.Builder
	for i := range MaxPrefixListEntries + 1 {
		fmt.Fprintf(&b, "\"10.%d.%d.0/24\",", i>>8, i&255)
	}
	src := "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = 7000\n    timeout = 1\n    allow = [" + b.String() + "]\n  }\n}\n"
	set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(src)}}, StackRules{})
	if len(set.Diags) != 1 || set.Diags[0].Summary != "Too many entries in allow" ||
		!strings.Contains(set.Diags[0].Detail, "at most 10000") || set.Diags[0].Subject.Start.Line != 6 {
		t.Errorf("diagnostics: %s", FormatDiagnostics(set.Files, set.Diags))
	}
}
