package config

import (
	"strings"
	"testing"
	"time"
)

// proxy.use_linger defaults to 1 s, keeps an explicit 0 (sharing off) through the defaults, and
// later files override earlier ones like any other key.
func TestProxyUseLinger(t *testing.T) {
	if d := Default().Proxy.UseLinger; d != DefaultUseLinger {
		t.Fatalf("Default() use_linger = %s, want %s", d, DefaultUseLinger)
	}
	cases := []struct {
		files []string
		want  time.Duration
	}{
		{[]string{`node_name = "n"`}, DefaultUseLinger},
		{[]string{"proxy {\n  use_linger = 0\n}\n"}, 0},
		{[]string{"proxy {\n  use_linger = \"0s\"\n}\n"}, 0},
		{[]string{"proxy {\n  use_linger = \"250ms\"\n}\n"}, 250 * time.Millisecond},
		{[]string{"proxy {\n  use_linger = 2\n}\n"}, 2 * time.Second},
		{[]string{"proxy {\n  use_linger = \"3s\"\n}\n", "proxy {\n  use_linger = 0\n}\n"}, 0},
		{[]string{"proxy {\n  use_linger = 0\n}\n", `proxy { enabled = false }`}, 0},
		{[]string{`{"proxy": {"use_linger": "5s"}}`}, 5 * time.Second},
	}
	for i, c := range cases {
		dir := t.TempDir()
		var srcs []Source
		for j, body := range c.files {
			name := string(rune('a'+j)) + ".hcl"
			if strings.HasPrefix(body, "{") {
				name = string(rune('a'+j)) + ".json"
			}
			srcs = append(srcs, Source{Path: write(t, dir, name, body)})
		}
		r := Load(srcs, false)
		if r.Diags.HasErrors() {
			t.Fatalf("case %d: %s", i, diagText(r))
		}
		if got := r.Config.Proxy.UseLinger; got != c.want {
			t.Errorf("case %d %q: use_linger = %s, want %s", i, c.files, got, c.want)
		}
	}
	// -dev keeps the default too.
	r := Load(nil, true)
	if got := r.Config.Proxy.UseLinger; got != DefaultUseLinger {
		t.Errorf("-dev use_linger = %s", got)
	}
}

// A negative or malformed linger is reported at its value, like every duration.
func TestProxyUseLingerInvalid(t *testing.T) {
	for _, in := range []string{`"-1s"`, `-1`, `"soon"`, `true`} {
		p := write(t, t.TempDir(), "bad.hcl", "proxy {\n  use_linger = "+in+"\n}\n")
		r := Load([]Source{{Path: p}}, false)
		if !r.Diags.HasErrors() {
			t.Errorf("use_linger = %s accepted", in)
			continue
		}
		txt := diagText(r)
		if !strings.Contains(txt, `Invalid duration for "use_linger"`) || !strings.Contains(txt, "bad.hcl:2:16") {
			t.Errorf("use_linger = %s: diagnostics %q, want the duration error at bad.hcl:2:16", in, txt)
		}
	}
}

// proxy.drain_timeout defaults to 30 s and keeps an explicit 0 (stop without a drain).
func TestProxyDrainTimeout(t *testing.T) {
	if d := Default().Proxy.DrainTimeout; d != DefaultDrainTimeout {
		t.Fatalf("Default() drain_timeout = %s, want %s", d, DefaultDrainTimeout)
	}
	for body, want := range map[string]time.Duration{
		`node_name = "n"`:                        DefaultDrainTimeout,
		"proxy {\n  drain_timeout = 0\n}\n":      0,
		"proxy {\n  drain_timeout = \"5s\"\n}\n": 5 * time.Second,
	} {
		r := Load([]Source{{Path: write(t, t.TempDir(), "a.hcl", body)}}, false)
		if r.Diags.HasErrors() {
			t.Fatalf("%q: %s", body, diagText(r))
		}
		if got := r.Config.Proxy.DrainTimeout; got != want {
			t.Errorf("%q: drain_timeout = %s, want %s", body, got, want)
		}
	}
	r := Load([]Source{{Path: write(t, t.TempDir(), "bad.hcl", "proxy {\n  drain_timeout = \"-1s\"\n}\n")}}, false)
	if !strings.Contains(diagText(r), `Invalid duration for "drain_timeout"`) {
		t.Errorf("negative drain_timeout: %q", diagText(r))
	}
}

// The UDP flood limits default to an 8 MiB receive buffer, 1000 new sessions/s per listener and
// 100/s per prefix; 0 survives (kernel default / no limit); negatives are refused at the value.
func TestProxyUDPFloodLimits(t *testing.T) {
	d := Default().Proxy
	if d.UDPReceiveBuffer != DefaultUDPReceiveBuffer || d.UDPNewSessionRate != DefaultUDPNewSessionRate ||
		d.UDPNewSessionRatePerPrefix != DefaultUDPNewSessionRatePerPrefix {
		t.Fatalf("defaults: %d %d %d", d.UDPReceiveBuffer, d.UDPNewSessionRate, d.UDPNewSessionRatePerPrefix)
	}
	r := Load([]Source{{Path: write(t, t.TempDir(), "a.hcl",
		"proxy {\n  udp_receive_buffer = 0\n  udp_new_session_rate = 0\n  udp_new_session_rate_per_prefix = 7\n}\n")}}, false)
	if r.Diags.HasErrors() {
		t.Fatal(diagText(r))
	}
	if p := r.Config.Proxy; p.UDPReceiveBuffer != 0 || p.UDPNewSessionRate != 0 || p.UDPNewSessionRatePerPrefix != 7 {
		t.Fatalf("explicit values: %d %d %d", p.UDPReceiveBuffer, p.UDPNewSessionRate, p.UDPNewSessionRatePerPrefix)
	}
	for _, c := range []struct{ body, want string }{
		{"proxy {\n  udp_new_session_rate = -1\n}\n", "Invalid udp_new_session_rate"},
		{"proxy {\n  udp_new_session_rate_per_prefix = -5\n}\n", "Invalid udp_new_session_rate_per_prefix"},
		{"proxy {\n  udp_receive_buffer = -1\n}\n", "Invalid udp_receive_buffer"},
		{"proxy {\n  udp_receive_buffer = 4294967296\n}\n", "Invalid udp_receive_buffer"},
	} {
		r := Load([]Source{{Path: write(t, t.TempDir(), "bad.hcl", c.body)}}, false)
		if txt := diagText(r); !strings.Contains(txt, c.want) || !strings.Contains(txt, "bad.hcl:2:") {
			t.Errorf("%q: diagnostics %q, want %q at bad.hcl:2", c.body, txt, c.want)
		}
	}
}
