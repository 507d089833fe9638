package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func diagText(r *Result) string { return FormatDiagnostics(r.Files, r.Diags) }

func TestLoadDefaults(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	dir := t.TempDir()
	p := write(t, dir, "a.hcl", `node_name = "n1"`)
	r := Load([]Source{{Path: p}}, false)
	if r.Diags.HasErrors() {
		t.Fatalf("unexpected diagnostics:\n%s", diagText(r))
	}
	c := r.Config
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"node_name", c.NodeName, "n1"},
		{"datacenter", c.Datacenter, DefaultDatacenter},
		{"ports.http", c.Ports.HTTP, DefaultHTTPPort},
		{"ports.grpc", c.Ports.GRPC, DefaultGRPCPort},
		{"log_level", c.LogLevel, "info"},
		{"consul.address", c.Consul.Address, "127.0.0.1:8500"},
		{"server.network", c.Server.Network, NetworkVXLAN},
		{"server.setup_timeout", c.Server.SetupTimeout, 10 * time.Second},
		{"proxy.http_addr", c.Proxy.HTTPAddr, ":80"},
		{"roles", strings.Join(c.Roles(), ","), ""},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadMergeOrder(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	first := write(t, dir, "first.hcl", `
node_name = "from-file"
log_level = "debug"
server {
  enabled    = true
  stacks_dir = "/srv/stacks"
  certs_dir  = "/srv/certs"
}
client {
  enabled = true
  service "sshd" {
    stack = "infra"
    port  = 22
  }
}`)
	// Directory files merge in lexical order: 20 overrides 10.
	write(t, confDir, "20-late.hcl", `log_level = "warn"`)
	write(t, confDir, "10-early.hcl", `
log_level = "error"
server { network = "direct" }
client {
  service "sshd" { port = 2222 }
  service "dns" {
    stack    = "infra"
    port     = 53
    protocol = "udp"
  }
}`)
	write(t, confDir, "ignored.txt", `this is not config`)
	write(t, confDir, "30-json.json", `{"ports": {"http": 4800}, "server": {"setup_timeout": "3s"}}`)

	r := Load([]Source{{Path: first}, {Path: confDir, IsDir: true}}, false)
	if r.Diags.HasErrors() {
		t.Fatalf("unexpected diagnostics:\n%s", diagText(r))
	}
	c := r.Config
	if c.NodeName != "from-file" || c.LogLevel != "warn" {
		t.Errorf("scalar override: node_name=%q log_level=%q", c.NodeName, c.LogLevel)
	}
	if !c.Server.Enabled || c.Server.StacksDir != "/srv/stacks" || c.Server.CertsDir != "/srv/certs" || c.Server.Network != "direct" {
		t.Errorf("blocks must merge: %+v", c.Server)
	}
	if c.Ports.HTTP != 4800 || c.Ports.GRPC != DefaultGRPCPort || c.Server.SetupTimeout != 3*time.Second {
		t.Errorf("json file: ports=%+v setup_timeout=%s", c.Ports, c.Server.SetupTimeout)
	}
	if len(c.Client.Services) != 2 {
		t.Fatalf("services merge by name: %+v", c.Client.Services)
	}
	ssh := c.Client.Services[0]
	if ssh.Name != "sshd" || ssh.Port != 2222 || ssh.Stack != "infra" || ssh.Protocol != "tcp" {
		t.Errorf("sshd merged wrongly: %+v", ssh)
	}
	if len(r.Paths) != 4 {
		t.Errorf("read %v; want first.hcl and the three config files of conf.d", r.Paths)
	}
}

func TestLoadErrorsHavePositions(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string // substrings, each must appear
	}{
		{"unknown key", "node_name = \"a\"\nbogus = 1\n", []string{"a.hcl:2:1: error: Unsupported argument", "bogus"}},
		{"wrong type", "ports {\n  http = \"abc\"\n}\n", []string{"a.hcl:2:11: error: Unsuitable value type"}},
		{"bad network", "server {\n  network = \"pigeon\"\n}\n", []string{"a.hcl:2:13: error: Invalid server.network", `"pigeon"`}},
		{"bad duration", "server {\n  setup_timeout = \"ten\"\n}\n", []string{"a.hcl:2:19: error: Invalid duration"}},
		{"port range", "ports {\n  grpc = 70000\n}\n", []string{"a.hcl:2:10: error: Invalid port"}},
		{"log level", "log_level = \"loud\"\n", []string{"a.hcl:1:13: error: Invalid log_level"}},
		{"host service", "client {\n  service \"x\" {\n    stack = \"s\"\n    port = 0\n  }\n}\n", []string{"a.hcl:4:12: error: Invalid host service port"}},
		{"host service dup", "client {\n  service \"x\" {\n    stack = \"s\"\n    port = 1\n  }\n  service \"x\" {\n    port = 2\n  }\n}\n", []string{"a.hcl:6:3: error: Duplicate host service"}},
		{"container port", "client {\n  container \"r\" {\n    service = \"redis.internal\"\n    port = \"x\"\n  }\n}\n", []string{"a.hcl:4:13: error: Unsuitable value type"}},
		{"container port range", "client {\n  container \"r\" {\n    service = \"redis.internal\"\n    port = 0\n  }\n}\n", []string{"a.hcl:4:12: error: Invalid container port"}},
		{"container protocol", "client {\n  container \"r\" {\n    service = \"a\"\n    port = 1\n    protocol = \"sctp\"\n  }\n}\n", []string{"a.hcl:5:16: error: Invalid container protocol"}},
		{"container service", "client {\n  container \"r\" {\n    service = \"a b\"\n    port = 1\n  }\n}\n", []string{"a.hcl:3:15: error: Invalid container service"}},
		{"container no service", "client {\n  container \"r\" {\n    port = 1\n  }\n}\n", []string{"a.hcl:2:3: error: Invalid container service"}},
		{"container dup", "client {\n  container \"r\" {\n    service = \"a\"\n    port = 1\n  }\n  container \"r\" {\n    port = 2\n  }\n}\n", []string{"a.hcl:6:3: error: Duplicate container"}},
		{"syntax", "server {\n", []string{"a.hcl:1:", "error: Unclosed configuration block"}},
		{"acme directory", "server {\n  acme {\n    directory_url = \"http://ca\"\n  }\n}\n", []string{"a.hcl:3:21: error: Invalid server.acme.directory_url"}},
		{"acme challenge", "server {\n  acme {\n    challenge = \"dns-01\"\n  }\n}\n", []string{"a.hcl:3:17: error: Invalid server.acme.challenge"}},
		{"acme renew_before", "server {\n  acme {\n    renew_before = \"5m\"\n  }\n}\n", []string{"a.hcl:3:20: error: Invalid server.acme.renew_before"}},
		{"acme ca_file", "server {\n  acme {\n    ca_file = \"/nonexistent/ca.pem\"\n  }\n}\n", []string{"a.hcl:3:15: error: Invalid server.acme.ca_file"}},
		{"acme unknown key", "server {\n  acme {\n    emial = \"x@y\"\n  }\n}\n", []string{"a.hcl:3:5: error: Unsupported argument"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, t.TempDir(), "a.hcl", tc.body)
			r := Load([]Source{{Path: p}}, false)
			if !r.Diags.HasErrors() {
				t.Fatalf("want an error, got none")
			}
			out := diagText(r)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("diagnostics lack %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestContainerBlock(t *testing.T) {
	p := write(t, t.TempDir(), "a.hcl", "client {\n  container \"redis-1\" {\n    service = \"redis.internal\"\n    port = 6379\n  }\n}\n")
	r := Load([]Source{{Path: p}}, false)
	if r.Diags.HasErrors() {
		t.Fatalf("%s", diagText(r))
	}
	want := []ContainerReplica{{Name: "redis-1", Service: "redis.internal", Port: 6379, Protocol: "tcp"}}
	if !reflect.DeepEqual(r.Config.Client.Containers, want) {
		t.Fatalf("containers = %+v, want %+v", r.Config.Client.Containers, want)
	}
}

func TestLoopbackHostServiceWarns(t *testing.T) {
	p := write(t, t.TempDir(), "a.hcl", "client {\n  service \"db\" {\n    stack = \"s\"\n    port = 5432\n    address = \"127.0.0.1\"\n  }\n}\n")
	r := Load([]Source{{Path: p}}, false)
	if r.Diags.HasErrors() {
		t.Fatalf("a loopback service is a warning, not an error:\n%s", diagText(r))
	}
	if out := diagText(r); !strings.Contains(out, "warning: Host service listens on loopback only") {
		t.Fatalf("want a loopback warning, got:\n%s", out)
	}
}

func TestConsulEnvironment(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "10.0.0.9:8500")
	t.Setenv("CONSUL_HTTP_TOKEN", "secret")
	c := Default()
	if c.Consul.Address != "10.0.0.9:8500" || c.Consul.Token != "secret" {
		t.Fatalf("env not honoured: %+v", c.Consul)
	}
	p := write(t, t.TempDir(), "a.hcl", "consul {\n  address = \"consul.service:8500\"\n}\n")
	r := Load([]Source{{Path: p}}, false)
	if r.Config.Consul.Address != "consul.service:8500" {
		t.Fatalf("config must win over env: %q", r.Config.Consul.Address)
	}
}

func TestDevMode(t *testing.T) {
	r := Load(nil, true)
	if r.Diags.HasErrors() {
		t.Fatalf("dev config invalid:\n%s", diagText(r))
	}
	c := r.Config
	if got := strings.Join(c.Roles(), ","); got != "server,client,proxy" {
		t.Errorf("dev roles = %s", got)
	}
	if c.Server.Network != NetworkDirect || !c.DevMode {
		t.Errorf("dev network = %s", c.Server.Network)
	}
}

func TestDurationForms(t *testing.T) {
	cases := map[string]time.Duration{`90`: 90 * time.Second, `"90s"`: 90 * time.Second, `"5m"`: 5 * time.Minute, `0`: 0, `1.5`: 1500 * time.Millisecond}
	for in, want := range cases {
		p := write(t, t.TempDir(), "a.hcl", "proxy {\n  udp_idle_timeout = "+in+"\n}\n")
		r := Load([]Source{{Path: p}}, false)
		if r.Diags.HasErrors() {
			t.Fatalf("%s: %s", in, diagText(r))
		}
		got := r.Config.Proxy.UDPIdleTimeout
		if want == 0 {
			want = DefaultUDPIdleTimeout // 0 means "use the default" for this field
		}
		if got != want {
			t.Errorf("%s: got %s want %s", in, got, want)
		}
	}
}

func TestACMEConfig(t *testing.T) {
	dir := t.TempDir()
	r := Load([]Source{{Path: write(t, dir, "a.hcl", "node_name = \"n\"\n")}}, false)
	if r.Diags.HasErrors() || r.Config.Server.ACME != nil {
		t.Fatalf("acme must be off by default: %+v %s", r.Config.Server.ACME, diagText(r))
	}
	ca := write(t, dir, "ca.pem", "x")
	r = Load([]Source{{Path: write(t, dir, "b.hcl", "server {\n  acme {\n    email = \"ops@example.com\"\n    ca_file = \""+ca+"\"\n  }\n}\n")}}, false)
	if r.Diags.HasErrors() {
		t.Fatal(diagText(r))
	}
	want := ACME{Email: "ops@example.com", DirectoryURL: DefaultACMEDirectory, CAFile: ca, Challenge: "http-01", RenewBefore: 30 * 24 * time.Hour}
	if got := r.Config.Server.ACME; got == nil || *got != want {
		t.Fatalf("acme = %+v, want %+v", got, want)
	}
}
