package config

import (
	"fmt"
	"strings"
	"testing"
)

func tlsStackFiles(files map[string]string) []StackFile {
	var out []StackFile
	for _, name := range []string{"a.hcl", "b.hcl"} {
		if src, ok := files[name]; ok {
			out = append(out, StackFile{Path: name, Bytes: []byte(src)})
		}
	}
	return out
}

func svcBlock(name, proto string, port int) string {
	return fmt.Sprintf("  service %q {\n    protocol    = %q\n    listen_port = %d\n    timeout     = \"30s\"\n  }\n", name, proto, port)
}

// TestParseStacks_TLS: tls services share a port, a tcp and a tls service never do, udp is its
// own port space; errors name both declarations by file:line:col.
func TestParseStacks_TLS(t *testing.T) {
	rules := StackRules{ReservedPorts: map[int]string{443: "HTTPS on the proxies"}}
	tests := []struct {
		name  string
		files map[string]string
		want  []string // "file:line:col summary"
		// detail, when set, must appear in the first diagnostic's detail.
		detail []string
	}{
		{name: "two tls services share a port",
			files: map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("a.example", "tls", 8443) + svcBlock("b.example", "tls", 8443) + "}\n"}},
		{name: "tls services share a port across files",
			files: map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("a.example", "tls", 8443) + "}\n",
				"b.hcl": "stack \"b\" {\n" + svcBlock("b.example", "tls", 8443) + svcBlock("c.example", "tls", 8443) + "}\n"}},
		{name: "tls and udp on one port number",
			files: map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("a.example", "tls", 8443) + svcBlock("q.example", "udp", 8443) + "}\n"}},
		{name: "tcp then tls",
			files: map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("raw", "tcp", 8443) + "}\n",
				"b.hcl": "stack \"b\" {\n" + svcBlock("a.example", "tls", 8443) + "}\n"},
			want:   []string{"b.hcl:2:3 Conflicting listen_port"},
			detail: []string{`tls port 8443 of service "a.example" (stack "b")`, `tcp service "raw" (stack "a") at a.hcl:2:3`, "cannot share"}},
		{name: "tls then tcp",
			files:  map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("a.example", "tls", 8443) + svcBlock("b.example", "tls", 8443) + svcBlock("raw", "tcp", 8443) + "}\n"},
			want:   []string{"a.hcl:12:3 Conflicting listen_port"},
			detail: []string{`tcp port 8443 of service "raw"`, `tls service "a.example" (stack "a") at a.hcl:2:3`}},
		{name: "same name twice is a duplicate service",
			files: map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("a.example", "tls", 8443) + "}\n",
				"b.hcl": "stack \"b\" {\n" + svcBlock("a.example", "tls", 8443) + "}\n"},
			want: []string{"b.hcl:2:3 Duplicate service"}},
		{name: "reserved port",
			files: map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("a.example", "tls", 443) + "}\n"},
			want:  []string{"a.hcl:2:3 Reserved listen_port"}, detail: []string{"tls port 443", "HTTPS on the proxies"}},
		{name: "tls needs listen_port and timeout",
			files: map[string]string{"a.hcl": "stack \"a\" {\n  service \"a.example\" {\n    protocol = \"tls\"\n  }\n}\n"},
			want:  []string{"a.hcl:2:3 Missing listen_port", "a.hcl:2:3 Missing timeout"}},
		{name: "wildcard name rejected",
			files: map[string]string{"a.hcl": "stack \"a\" {\n" + svcBlock("*.example.com", "tls", 8443) + "}\n"},
			want:  []string{"a.hcl:2:11 Invalid service name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := ParseStacks(tlsStackFiles(tc.files), rules)
			var got []string
			for _, d := range set.Diags {
				got = append(got, fmt.Sprintf("%s:%d:%d %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("diagnostics:\n%s\nwant:\n%s\nfull:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"),
					FormatDiagnostics(set.Files, set.Diags))
			}
			for _, want := range tc.detail {
				if !strings.Contains(set.Diags[0].Detail, want) {
					t.Errorf("detail %q lacks %q", set.Diags[0].Detail, want)
				}
			}
			if len(tc.want) == 0 {
				for _, s := range set.Services() {
					if s.Protocol == ProtocolTLS && (s.ListenPort != 8443 || !s.EntryPoint) {
						t.Errorf("service %+v", s)
					}
				}
			}
		})
	}
}

func TestPortSpace(t *testing.T) {
	for proto, want := range map[string]string{ProtocolTCP: "tcp", ProtocolTLS: "tcp", ProtocolUDP: "udp"} {
		if got := PortSpace(proto); got != want {
			t.Errorf("PortSpace(%s) = %s", proto, got)
		}
	}
	if !SharesPort(ProtocolTLS, ProtocolTLS) || SharesPort(ProtocolTCP, ProtocolTLS) || SharesPort(ProtocolTCP, ProtocolTCP) {
		t.Error("SharesPort")
	}
}
