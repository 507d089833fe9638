package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"180d", 180 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"0d", 0, true},
		{"1d-1h", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"-1d", 0, false},
		{"106752d", 0, false},
		{"106751d24h", 0, false},
		{"", 0, false},
	} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzParseDuration: never panics, never returns a negative duration without an error.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"180d", "1d12h", "90s", "d", "9999999999999999999d", "1d-1h", "0d0s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && d < 0 && !strings.HasPrefix(s, "-") {
			t.Fatalf("ParseDuration(%q) = %v: negative", s, d)
		}
	})
}

func TestParseStacks_HTTPSKeys(t *testing.T) {
	svc := func(body string) string {
		return "stack \"a\" {\n  service \"x\" {\n" + body + "  }\n}\n"
	}
	for _, tc := range []struct {
		name     string
		body     string
		redirect bool
		hsts     time.Duration
		want     []string // file:line:col summary
	}{
		{"defaults", "", false, 0, nil},
		{"both", "    https_redirect = true\n    hsts = \"180d\"\n", true, 180 * 24 * time.Hour, nil},
		{"hsts seconds", "    hsts = 31536000\n", false, 365 * 24 * time.Hour, nil},
		{"redirect not bool", "    https_redirect = \"yes\"\n", false, 0, []string{"a.hcl:3:22 Invalid https_redirect"}},
		{"hsts bad", "    hsts = \"forever\"\n", false, 0, []string{"a.hcl:3:12 Invalid duration for \"hsts\""}},
		{"hsts sub-second", "    hsts = \"1500ms\"\n", false, 0, []string{"a.hcl:3:12 Invalid hsts"}},
		{"hsts too long", "    hsts = \"1000d\"\n", false, 0, []string{"a.hcl:3:12 Invalid hsts"}},
		{"on tcp", "    protocol = \"tcp\"\n    listen_port = 9000\n    timeout = 1\n    https_redirect = true\n    hsts = \"1d\"\n",
			false, 0, []string{"a.hcl:6:5 HTTP-only key", "a.hcl:7:5 HTTP-only key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := ParseStacks([]StackFile{{Path: "a.hcl", Bytes: []byte(svc(tc.body))}}, StackRules{})
			var got []string
			for _, d := range set.Diags {
				got = append(got, fmt.Sprintf("%s:%d:%d %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if tc.want != nil {
				return
			}
			p := set.Stacks[0].Services[0].Policy
			if p.HTTPSRedirect != tc.redirect || p.HSTS != tc.hsts {
				t.Fatalf("policy %+v, want redirect=%v hsts=%v", p, tc.redirect, tc.hsts)
			}
		})
	}
}

func TestStackRulesReserveHTTPSPort(t *testing.T) {
	c := Default()
	if why := StackRulesFor(c).ReservedPorts[443]; !strings.Contains(why, "https_addr") {
		t.Fatalf("443 not reserved by default: %q", why)
	}
	c.Proxy.HTTPSAddr = ":8443"
	r := StackRulesFor(c).ReservedPorts
	if _, ok := r[443]; ok || r[8443] == "" {
		t.Fatalf("https_addr :8443: reserved %v", r)
	}
	c.Proxy.HTTPSAddr = ""
	if _, ok := StackRulesFor(c).ReservedPorts[443]; ok {
		t.Fatal("443 reserved with HTTPS off")
	}
}

// proxy.https_addr defaults to ":443", keeps an explicit "" (HTTPS off), is 127.0.0.1:8443 in
// -dev, and must be host:port distinct from http_addr.
func TestProxyHTTPSAddr(t *testing.T) {
	load := func(body string) *Result {
		t.Helper()
		return Load([]Source{{Path: write(t, t.TempDir(), "a.hcl", body)}}, false)
	}
	for body, want := range map[string]string{
		`node_name = "n"`:                                 DefaultProxyHTTPSAddr,
		"proxy {\n  https_addr = \"\"\n}\n":               "",
		"proxy {\n  https_addr = \"127.0.0.1:9443\"\n}\n": "127.0.0.1:9443",
	} {
		r := load(body)
		if r.Diags.HasErrors() {
			t.Fatalf("%q: %s", body, diagText(r))
		}
		if got := r.Config.Proxy.HTTPSAddr; got != want {
			t.Errorf("%q: https_addr = %q, want %q", body, got, want)
		}
	}
	if got := Load(nil, true).Config.Proxy.HTTPSAddr; got != "127.0.0.1:8443" {
		t.Errorf("-dev https_addr = %q", got)
	}
	for body, summary := range map[string]string{
		"proxy {\n  enabled = true\n  https_addr = \"443\"\n}\n":                        "Invalid proxy.https_addr",
		"proxy {\n  enabled = true\n  http_addr = \":80\"\n  https_addr = \":80\"\n}\n": "Conflicting proxy.https_addr",
	} {
		r := load(body)
		if !r.Diags.HasErrors() || !strings.Contains(diagText(r), summary) {
			t.Errorf("%q: want %q, got %s", body, summary, diagText(r))
		}
	}
}
