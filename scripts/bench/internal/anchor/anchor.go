// Package anchor runs the proxies nullnet is compared with, HAProxy (mode tcp, splice on) and
// nginx (stream module), from the Debian packages, each with its own configuration and
// process group so that the bench measures and stops exactly what it started.
package anchor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
)

// Route is one listener of a relay: protocol "tcp" or "udp", listen and backend host:port.
type Route struct {
	Protocol string
	Listen   string
	Backend  string
	// NoProbe skips the readiness connect, for backends that log a probe as an error (iperf3).
	NoProbe bool
}

// Relay is a running anchor.
type Relay struct {
	Name string
	*proc.Process
}

// Installed returns an error naming the Debian package when an anchor's binary is missing.
func Installed() error {
	// One entry per package: nginx's binary and its stream module are two packages, each named once.
	var missing []string
	for _, need := range []struct{ path, pkg string }{
		{"haproxy", "haproxy"}, {"nginx", "nginx-light"}, {NginxStreamModule, "libnginx-mod-stream"}, {"iperf3", "iperf3"},
	} {
		var err error
		if filepath.IsAbs(need.path) {
			_, err = os.Stat(need.path)
		} else {
			_, err = exec.LookPath(need.path)
		}
		if err != nil {
			missing = append(missing, need.pkg)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing benchmark tools: run scripts/setup (make bench does), or apt-get install -y %s", strings.Join(missing, " "))
	}
	return nil
}

// NginxStreamModule is where Debian's libnginx-mod-stream puts the module.
const NginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// haproxyConf: threads default to the CPU count like the other relays; splice both ways is
// HAProxy's fastest TCP path on Linux; timeouts are long so no test is cut short.
var haproxyConf = template.Must(template.New("haproxy").Parse(`global
  maxconn {{.MaxConn}}
  log stderr format raw local0 err
defaults
  mode tcp
  option splice-request
  option splice-response
  timeout connect 5s
  timeout client 5m
  timeout server 5m
  timeout client-fin 1s
  timeout server-fin 1s
{{range $i, $r := .Routes}}
listen l{{$i}}
  bind {{$r.Listen}}
  server b{{$i}} {{$r.Backend}}
{{end}}`))

// nginxConf: worker_processes auto (one per core), reuseport so UDP spreads over workers,
// enough connections for the idle-session figure within the file limit the bench inherits.
var nginxConf = template.Must(template.New("nginx").Parse(`daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile {{.NoFile}};
pid {{.Dir}}/nginx.pid;
error_log stderr error;
load_module {{.Module}};
events { worker_connections {{.Conns}}; multi_accept on; }
stream {
{{range .Routes}}  server {
    listen {{.Listen}}{{if eq .Protocol "udp"}} udp reuseport{{end}};
    proxy_pass {{.Backend}};
    proxy_connect_timeout 5s;
    proxy_timeout {{if eq .Protocol "udp"}}60s{{else}}5m{{end}};
  }
{{end}}}
`))

// Options say where an anchor runs.
type Options struct {
	// Dir holds the configuration and the log.
	Dir string
	// NoFile is the open-file limit the relay inherits: HAProxy refuses a maxconn it cannot back
	// with about two descriptors per connection, nginx gets it as worker_rlimit_nofile.
	NoFile int
	// Netns, when set, runs the relay in that network namespace (`ip netns exec`). Listeners are
	// then not probed from here; the caller warms the path up from inside the namespace.
	Netns string
}

func (o Options) command(name string, args ...string) (string, []string) {
	if o.Netns == "" {
		return name, args
	}
	return "ip", append([]string{"netns", "exec", o.Netns, name}, args...)
}

// StartHAProxy writes haproxy.cfg (TCP routes only; HAProxy has no UDP relay) and runs it.
func StartHAProxy(ctx context.Context, o Options, routes []Route) (*Relay, error) {
	var tcp []Route
	for _, r := range routes {
		if r.Protocol == "tcp" {
			tcp = append(tcp, r)
		}
	}
	cfg := filepath.Join(o.Dir, "haproxy.cfg")
	data := struct {
		MaxConn int
		Routes  []Route
	}{max(256, o.NoFile/3), tcp}
	if err := render(haproxyConf, cfg, data); err != nil {
		return nil, err
	}
	name, args := o.command("haproxy", "-db", "-f", cfg)
	p, err := proc.Start("haproxy", o.Dir, nil, name, args...)
	if err != nil {
		return nil, err
	}
	return ready(ctx, o, "haproxy", p, tcp)
}

// StartNginx writes nginx.conf and runs nginx in the foreground with o.Dir as its prefix.
func StartNginx(ctx context.Context, o Options, routes []Route) (*Relay, error) {
	dir, noFile := o.Dir, o.NoFile
	cfg := filepath.Join(dir, "nginx.conf")
	data := struct {
		Dir, Module   string
		NoFile, Conns int
		Routes        []Route
	}{dir, NginxStreamModule, noFile, max(1024, noFile-1024), routes}
	if err := render(nginxConf, cfg, data); err != nil {
		return nil, err
	}
	// nginx drops worker privileges to "nobody", which must be able to read nothing here:
	// the stream module needs no temp files.
	name, args := o.command("nginx", "-p", dir, "-c", cfg, "-e", "stderr")
	p, err := proc.Start("nginx", dir, nil, name, args...)
	if err != nil {
		return nil, err
	}
	return ready(ctx, o, "nginx", p, routes)
}

func ready(ctx context.Context, o Options, name string, p *proc.Process, routes []Route) (*Relay, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if o.Netns != "" {
		// Not reachable from here: give a broken configuration the time to exit.
		time.Sleep(500 * time.Millisecond)
	}
	for _, r := range routes {
		if r.Protocol != "tcp" || r.NoProbe || o.Netns != "" {
			continue
		}
		if err := p.WaitTCP(ctx, r.Listen); err != nil {
			p.Stop(2 * time.Second)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if exited, err := p.Exited(); exited {
		return nil, fmt.Errorf("%s exited at start (%v): %s", name, err, p.LogTail(800))
	}
	return &Relay{Name: name, Process: p}, nil
}

func render(t *template.Template, path string, data any) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := t.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("rendering %s: %w", path, err)
	}
	return f.Close()
}
