package anchor

import (
	"context"
	"os"
	"path/filepath"
	"text/template"

	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
)

// TLSRoute is one HTTPS listener terminating TLS with one certificate and forwarding plain
// HTTP/1.1 to Backend, for the HTTPS figures.
type TLSRoute struct {
	Listen  string
	Backend string
	// CertFile and KeyFile are PEM files (nginx); Combined is both in one file (HAProxy).
	CertFile, KeyFile, Combined string
}

// haproxyTLSConf: mode http with keep-alive to the client and connection reuse to the backend,
// TLS 1.2+ with ALPN as a web-facing HAProxy is configured; threads = cores (the default).
var haproxyTLSConf = template.Must(template.New("haproxy-tls").Parse(`global
  maxconn {{.MaxConn}}
  log stderr format raw local0 err
  tune.ssl.default-dh-param 2048
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 5m
  timeout server 5m
  timeout http-keep-alive 5m
{{range $i, $r := .Routes}}
frontend f{{$i}}
  bind {{$r.Listen}} ssl crt {{$r.Combined}} alpn h2,http/1.1 ssl-min-ver TLSv1.2
  default_backend b{{$i}}
backend b{{$i}}
  server s{{$i}} {{$r.Backend}}
{{end}}`))

// nginxTLSConf: worker_processes auto, keep-alive upstream connections, TLS 1.2/1.3 with ALPN
// (http2 on), the way nginx is set up in front of a web service.
var nginxTLSConf = template.Must(template.New("nginx-tls").Parse(`daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile {{.NoFile}};
pid {{.Dir}}/nginx.pid;
error_log stderr error;
user root;
events { worker_connections {{.Conns}}; multi_accept on; }
http {
  access_log off;
  client_body_temp_path {{.Dir}}/body;
  proxy_temp_path {{.Dir}}/proxy;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  ssl_protocols TLSv1.2 TLSv1.3;
{{range $i, $r := .Routes}}  upstream u{{$i}} { server {{$r.Backend}}; keepalive 64; }
  server {
    listen {{$r.Listen}} ssl http2;
    ssl_certificate {{$r.CertFile}};
    ssl_certificate_key {{$r.KeyFile}};
    location / {
      proxy_pass http://u{{$i}};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
{{end}}}
`))

// StartHAProxyTLS writes haproxy-tls.cfg and runs HAProxy terminating TLS for routes.
func StartHAProxyTLS(ctx context.Context, o Options, routes []TLSRoute) (*Relay, error) {
	cfg := filepath.Join(o.Dir, "haproxy-tls.cfg")
	data := struct {
		MaxConn int
		Routes  []TLSRoute
	}{max(256, o.NoFile/3), routes}
	if err := render(haproxyTLSConf, cfg, data); err != nil {
		return nil, err
	}
	name, args := o.command("haproxy", "-db", "-f", cfg)
	p, err := proc.Start("haproxy-tls", o.Dir, nil, name, args...)
	if err != nil {
		return nil, err
	}
	return ready(ctx, o, "haproxy", p, tlsProbes(routes))
}

// StartNginxTLS writes nginx-tls.conf and runs nginx terminating TLS for routes.
func StartNginxTLS(ctx context.Context, o Options, routes []TLSRoute) (*Relay, error) {
	for _, d := range []string{"body", "proxy"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	cfg := filepath.Join(o.Dir, "nginx-tls.conf")
	data := struct {
		Dir           string
		NoFile, Conns int
		Routes        []TLSRoute
	}{o.Dir, o.NoFile, max(1024, o.NoFile-1024), routes}
	if err := render(nginxTLSConf, cfg, data); err != nil {
		return nil, err
	}
	name, args := o.command("nginx", "-p", o.Dir, "-c", cfg, "-e", "stderr")
	p, err := proc.Start("nginx-tls", o.Dir, nil, name, args...)
	if err != nil {
		return nil, err
	}
	return ready(ctx, o, "nginx", p, tlsProbes(routes))
}

// tlsProbes: readiness is a TCP connect to each listener.
func tlsProbes(routes []TLSRoute) []Route {
	var out []Route
	for _, r := range routes {
		out = append(out, Route{Protocol: "tcp", Listen: r.Listen, Backend: r.Backend})
	}
	return out
}
