package config

import (
	"strings"
	"testing"
)

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.1.2.3/8", "192.0.2.7", "2001:db8::1/32", "::ffff:10.0.0.0/104", "2001:db8::5"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "10.0.0.0/8", "2001:db8::5/128"}
	for i, p := range got {
		if p.String() != want[i] {
			t.Errorf("%d: %s, want %s", i, p, want[i])
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "nope", "fe80::1%eth0", ""} {
		if _, err := ParsePrefixes([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestProxyProtocolFrom(t *testing.T) {
	r := Load([]Source{{Path: write(t, t.TempDir(), "a.hcl",
		"proxy {\n  proxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.1\"]\n}\n")}}, false)
	if r.Diags.HasErrors() {
		t.Fatal(diagText(r))
	}
	if p := r.Config.Proxy.ProxyProtocolFrom; len(p) != 2 || p[0] != "10.0.0.0/8" {
		t.Fatalf("proxy_protocol_from = %q", p)
	}
	r = Load([]Source{{Path: write(t, t.TempDir(), "bad.hcl",
		"proxy {\n  proxy_protocol_from = [\"10.0.0.0/8\", \"10.0.0.0/99\"]\n}\n")}}, false)
	if txt := diagText(r); !strings.Contains(txt, "Invalid proxy_protocol_from") || !strings.Contains(txt, "bad.hcl:2:25") ||
		!strings.Contains(txt, "10.0.0.0/99") {
		t.Errorf("diagnostics %q", txt)
	}
}
