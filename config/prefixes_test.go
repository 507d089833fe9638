package config

import (
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "203.0.113.0/24", want: "203.0.113.0/24"},
		{in: "203.0.113.9", want: "203.0.113.9/32"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "2001:DB8::1", want: "2001:db8::1/128"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "::ffff:10.0.0.1", want: "10.0.0.1/32"},
		{in: "10.1.2.3/8", err: "host bits set; did you mean 10.0.0.0/8"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: "example.com", err: "neither an address nor a CIDR"},
		{in: "10.0.0.0/33", err: "neither"},
		{in: "", err: "neither"},
	}
	for _, tc := range tests {
		p, err := ParsePrefix(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePrefix(%q) = %v, %v; want error with %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	long := make([]string, MaxPrefixListEntries+1)
	for i := range long {
		long[i] = "10.0.0.1"
	}
	if _, err := ParsePrefixes(long); err == nil || !strings.Contains(err.Error(), "at most 10000") {
		t.Errorf("a list of %d entries: %v", len(long), err)
	}
}

// FuzzParsePrefix: any string parses to a canonical prefix or an error, never a panic; the
// canonical form parses back to itself and it is masked, unmapped and zone-free.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "2001:db8::/32", "::ffff:1.2.3.4/120", "1.2.3.4", "::", "0.0.0.0/0", "x/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		again, err := ParsePrefix(p.String())
		if err != nil || again != p {
			t.Fatalf("%q → %v → %v, %v", s, p, again, err)
		}
		if p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("%q → %v is not canonical", s, p)
		}
	})
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
	r = Load([]Source{{Path: write(t, t.TempDir(), "host.hcl",
		"proxy {\n  proxy_protocol_from = [\"10.1.2.3/8\"]\n}\n")}}, false)
	if txt := diagText(r); !strings.Contains(txt, "Invalid proxy_protocol_from") || !strings.Contains(txt, "did you mean 10.0.0.0/8") {
		t.Errorf("host bits: diagnostics %q", txt)
	}
}
