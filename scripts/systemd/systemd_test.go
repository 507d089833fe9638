// Package systemd holds nullnet's systemd units and sample configurations. The test parses the
// units and checks the lines nullnet's operation depends on (capabilities, reload, restart),
// runs `systemd-analyze verify` on them, and loads the sample configurations with nullnet's own
// loader.
package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nullnet/nullnet/config"
)

// unit is a parsed unit file: section -> key -> values (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns the last value of a key, as systemd applies it.
func (u unit) get(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

func TestUnits(t *testing.T) {
	cases := []struct {
		file string
		caps string // the exact capability set, ambient and bounding
		conf string // sample configuration the unit's -config-dir points at
		dir  string
	}{
		{file: "nullnet-agent.service", caps: "CAP_NET_ADMIN CAP_NET_BIND_SERVICE", conf: "agent.hcl", dir: "/etc/nullnet.d"},
		{file: "nullnet-server.service", caps: "", conf: "server.hcl", dir: "/etc/nullnet-server.d"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			u := parseUnit(t, c.file)
			want := map[string]string{
				"ExecReload":            "/bin/kill -HUP $MAINPID",
				"Restart":               "on-failure",
				"NoNewPrivileges":       "yes",
				"KillSignal":            "SIGTERM",
				"AmbientCapabilities":   c.caps,
				"CapabilityBoundingSet": c.caps,
				"ExecStart":             "/usr/local/bin/nullnet agent -config-dir=" + c.dir,
			}
			for k, v := range want {
				if got, ok := u.get("Service", k); !ok || got != v {
					t.Errorf("[Service] %s = %q (set: %v), want %q", k, got, ok, v)
				}
			}
			if user, _ := u.get("Service", "User"); user == "" || user == "root" {
				t.Errorf("[Service] User = %q: run as an unprivileged user with ambient capabilities", user)
			}
			if w, _ := u.get("Install", "WantedBy"); w != "multi-user.target" {
				t.Errorf("[Install] WantedBy = %q", w)
			}
			// The sample configuration must load: it is what the docs tell users to start from.
			res := config.Load([]config.Source{{Path: c.conf}}, false)
			if res.Diags.HasErrors() {
				var b strings.Builder
				_ = config.WriteDiagnostics(&b, res.Files, res.Diags)
				t.Errorf("%s does not load:\n%s", c.conf, b.String())
			}
		})
	}
}

// TestUnitsVerify runs systemd's own checker on the units, with ExecStart pointed at a binary
// that exists (verify checks it). Any warning is a failure.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: run scripts/setup (make test does), or apt-get install systemd")
	}
	dir := t.TempDir()
	var files []string
	for _, name := range []string{"nullnet-agent.service", "nullnet-server.service"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		// /bin/true stands in for the binary: verify only needs an executable there.
		out := filepath.Join(dir, name)
		if err := os.WriteFile(out, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/nullnet", "/bin/true")), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, out)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, files...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
