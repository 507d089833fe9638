package proxy

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/config"
)

// TestHTTPRoutesWithServer: route blocks written in a stack file reach the proxy through a real
// server on a real Consul (KV policy documents, the port table's http_services), and curl
// requests follow them; a new stack file changes the routes live; the access log names the
// target service and its replica.
func TestHTTPRoutesWithServer(t *testing.T) {
	e := startServer(t)
	www, api := startNamedBackend(t, "www"), startNamedBackend(t, "api")
	stack := func(routes string) string {
		return `
  service "www.nnroutes.test" {
    timeout = "30s"
` + routes + `
  }
  service "api.nnroutes.test" {
    timeout = "30s"
  }
`
	}
	e.writeStack(stack(`    route "/api/" {
      service      = "api.nnroutes.test"
      strip_prefix = true
    }`))
	e.replica("www-1", "www.nnroutes.test", int(www.Port()))
	e.replica("api-1", "api.nnroutes.test", int(api.Port()))

	logPath := filepath.Join(t.TempDir(), "access.log")
	logger := hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Info, Output: testWriter{t}})
	tp := startProxy(t, newGRPCResolver(e.conn, "nnroutes-proxy", logger.Named("resolver")), func(a *config.Config, c *Config) {
		a.NodeName = "nnroutes-proxy"
		a.Proxy.AccessLog = logPath
		c.Conn = e.conn
		c.DisableHTTP = false
		c.Logger = logger
	})
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	addr := tp.http.Addr()

	get := func(uri string) (backend, seenURI, prefix string) {
		t.Helper()
		code, body := curl(t, "http://"+addr+uri, "-H", "Host: www.nnroutes.test")
		if code != 200 {
			return "", "", ""
		}
		var m map[string]string
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("%s: %q: %v", uri, body, err)
		}
		return m["backend"], m["uri"], m["prefix"]
	}
	waitFor(t, 30*time.Second, "the route in the proxy's port table (the server must publish http_services with policies: conduit's path)", func() bool {
		b, _, _ := get("/api/ping")
		return b == "api"
	})
	if b, u, p := get("/api/users?id=7"); b != "api" || u != "/users?id=7" || p != "/api/" {
		t.Errorf("/api/users?id=7: backend %q saw %q prefix %q", b, u, p)
	}
	if b, u, _ := get("/home?x=1"); b != "www" || u != "/home?x=1" {
		t.Errorf("/home?x=1: backend %q saw %q", b, u)
	}

	// The routes change with the stack file: "/api/" now keeps its prefix, "/v1/" is added.
	e.writeStack(stack(`    route "/api/" {
      service = "api.nnroutes.test"
    }
    route "/v1/" {
      service      = "api.nnroutes.test"
      strip_prefix = true
    }`))
	waitFor(t, 30*time.Second, "the new routes in the proxy", func() bool {
		b, u, _ := get("/v1/x")
		return b == "api" && u == "/x"
	})
	if b, u, _ := get("/api/users"); b != "api" || u != "/api/users" {
		t.Errorf("/api/users after the change: backend %q saw %q", b, u)
	}

	lines := readLines(t, logPath, 1)
	re := regexp.MustCompile(`method=GET host=www\.nnroutes\.test uri="?/api/users\?id=7"? status=200 bytes=\d+ duration_ms=\S+ service=api\.nnroutes\.test upstream=` +
		regexp.QuoteMeta(api.String()))
	if !re.MatchString(strings.Join(lines, "\n")) {
		t.Errorf("no access log line for the routed request:\n%s", strings.Join(lines, "\n"))
	}
}
