package config

import (
	"strings"
	"testing"
)

// proxy.access_log: off by default; "on", "off" and absolute paths accepted; anything else
// refused at the value with its position.
func TestProxyAccessLog(t *testing.T) {
	if v := Default().Proxy.AccessLog; v != AccessLogOff {
		t.Fatalf("default access_log = %q, want off", v)
	}
	for body, want := range map[string]string{
		`node_name = "n"`:                                       "off",
		"proxy {\n  access_log = \"on\"\n}\n":                   "on",
		"proxy {\n  access_log = \"/var/log/nullnet.log\"\n}\n": "/var/log/nullnet.log",
	} {
		r := Load([]Source{{Path: write(t, t.TempDir(), "a.hcl", body)}}, false)
		if r.Diags.HasErrors() {
			t.Fatalf("%q: %s", body, diagText(r))
		}
		if got := r.Config.Proxy.AccessLog; got != want {
			t.Errorf("%q: access_log = %q, want %q", body, got, want)
		}
	}
	for _, bad := range []string{"yes", "access.log", ""} {
		r := Load([]Source{{Path: write(t, t.TempDir(), "bad.hcl", "proxy {\n  access_log = \""+bad+"\"\n}\n")}}, false)
		txt := diagText(r)
		if bad == "" {
			// An empty string is the unset value: the default applies.
			if r.Diags.HasErrors() || r.Config.Proxy.AccessLog != "off" {
				t.Errorf("empty access_log: %q %q", txt, r.Config.Proxy.AccessLog)
			}
			continue
		}
		if !strings.Contains(txt, "Invalid proxy.access_log") || !strings.Contains(txt, "bad.hcl:2:") {
			t.Errorf("access_log = %q: diagnostics %q", bad, txt)
		}
	}
}
