package config

import (
	"testing"
)

// FuzzParseStacks: no stack file may crash the parser; a set with errors carries a diagnostic
// for each, and a set without errors yields only well-formed services.
func FuzzParseStacks(f *testing.F) {
	seeds := []string{
		"stack \"a\" {\n  service \"redis.internal\" {\n    protocol = \"tcp\"\n    listen_port = 6379\n    timeout = 0\n  }\n}\n",
		"stack \"a\" {\n  service \"dns\" {\n    protocol = \"udp\"\n    listen_port = 53\n    timeout = \"30s\"\n  }\n  service \"web.com\" {}\n}\n",
		"stack \"a\" {\n  service \"x\" {\n    listen_port = 70000\n    timeout = -1\n  }\n}\n",
		"stack \"a\" {\n  service \"x\" { protocol = 5 }\n}\nstack \"a\" {}\n",
		"stack {",
		"stack \"a\" \"b\" { service {} }",
		"stack \"a\" {\n  service \"x\" {\n    timeout = 1e400\n  }\n}\n",
		"stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = 1.5\n    timeout = \"1h\"\n  }\n}\n",
		"stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n    listen_port = 9\n    timeout = 1\n    allow = [\"10.0.0.0/8\", \"::1\"]\n    deny = [\"10.0.0.1\"]\n    new_connections_per_client = \"20/s burst 40\"\n    max_sessions = 5\n  }\n}\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	rules := StackRules{ReservedPorts: map[int]string{80: "the proxies' HTTP listener"}}
	f.Fuzz(func(t *testing.T, body string) {
		set := ParseStacks([]StackFile{{Path: "fuzz.hcl", Bytes: []byte(body)}}, rules)
		_ = FormatDiagnostics(set.Files, set.Diags)
		if set.Diags.HasErrors() {
			return
		}
		for _, s := range set.Services() {
			switch s.Protocol {
			case ProtocolHTTP:
				if s.ListenPort != 0 {
					t.Fatalf("accepted an http service with listen_port %d", s.ListenPort)
				}
			case ProtocolTCP, ProtocolUDP:
				if s.ListenPort < 1 || s.ListenPort > 65535 || !s.EntryPoint {
					t.Fatalf("accepted %s service %q with listen_port %d entry=%v", s.Protocol, s.Name, s.ListenPort, s.EntryPoint)
				}
			default:
				t.Fatalf("accepted protocol %q", s.Protocol)
			}
			if s.Timeout < 0 {
				t.Fatalf("accepted a negative timeout")
			}
		}
	})
}
