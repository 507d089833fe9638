package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// startNamedBackend starts an upstream that answers with its name and what it received, and
// echoes bytes after a WebSocket upgrade.
func startNamedBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	srv := httptest.NewServer(wsEchoHandler(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"backend": name, "uri": r.URL.RequestURI(),
			"host": r.Host, "prefix": r.Header.Get("X-Forwarded-Prefix")})
	}))
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
}

func routesBundle(version uint64, service string, routes ...*pb.HTTPRoute) *pb.PortMappingBundle {
	return &pb.PortMappingBundle{Version: version, HttpServices: []*pb.PortMapping{{Service: service,
		Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP, Policy: &pb.ServicePolicy{Routes: routes}}}}
}

// readLines waits until path holds at least n lines and returns them.
func readLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	waitFor(t, 10*time.Second, fmt.Sprintf("%d access log lines in %s", n, path), func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) == 0 {
			lines = nil
		}
		return len(lines) >= n
	})
	return lines
}

// TestHTTPRoutesWithCurl: path routes through the real router with curl as the client: two
// backends chosen by prefix, the longest prefix winning, strip_prefix (and X-Forwarded-Prefix)
// seen by the backend, no match going to the Host's own service, query strings kept; every
// request, a WebSocket included (when it ends), written to the access log file with its
// fields.
func TestHTTPRoutesWithCurl(t *testing.T) {
	www, api, v2 := startNamedBackend(t, "www"), startNamedBackend(t, "api"), startNamedBackend(t, "v2")
	res := newTestResolver()
	res.set("www.example.com", www)
	res.set("api.example.com", api)
	res.set("v2.example.com", v2)
	logPath := filepath.Join(t.TempDir(), "access.log")
	tp := startProxy(t, res, func(a *config.Config, c *Config) {
		c.DisableHTTP = false
		a.Proxy.AccessLog = logPath
	})
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	addr := tp.http.Addr()
	tp.applyBundle(routesBundle(1, "www.example.com",
		&pb.HTTPRoute{PathPrefix: "/api/", Service: "api.example.com", StripPrefix: true},
		&pb.HTTPRoute{PathPrefix: "/api/v2/", Service: "v2.example.com"}))

	type seen struct{ Backend, URI, Host, Prefix string }
	cases := []struct {
		uri  string
		want seen
	}{
		{"/api/users?id=7&q=a%20b", seen{"api", "/users?id=7&q=a%20b", "www.example.com", "/api/"}},
		{"/api/", seen{"api", "/", "www.example.com", "/api/"}},
		{"/api/v2/items?page=2", seen{"v2", "/api/v2/items?page=2", "www.example.com", ""}},
		{"/api", seen{"www", "/api", "www.example.com", ""}},
		{"/index.html?z=9", seen{"www", "/index.html?z=9", "www.example.com", ""}},
	}
	bodies := map[string]int{}
	for _, tc := range cases {
		code, body := curl(t, "http://"+addr+tc.uri, "-H", "Host: www.example.com", "-H", "X-Forwarded-Prefix: /evil")
		if code != 200 {
			t.Fatalf("%s: status %d: %s", tc.uri, code, body)
		}
		var got seen
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%s: %q: %v", tc.uri, body, err)
		}
		if got != tc.want {
			t.Errorf("%s: backend saw %+v, want %+v", tc.uri, got, tc.want)
		}
		bodies[tc.uri] = len(body)
	}
	code, _ := curl(t, "http://"+addr+"/x", "-H", "Host: nosuch.example.com")
	if code != 404 {
		t.Errorf("unknown host: %d", code)
	}

	// A WebSocket through a route: one line when the connection ends, status 101.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET /api/ws HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	wsResp, err := http.ReadResponse(br, nil)
	if err != nil || wsResp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", wsResp, err)
	}
	if len(readLines(t, logPath, len(cases)+1)) != len(cases)+1 {
		t.Fatal("a line for the WebSocket before it ended")
	}
	for range 3 {
		if _, err := c.Write([]byte("frame-bytes")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("frame-bytes"))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != "frame-bytes" {
			t.Fatalf("after upgrade: %q %v", got, err)
		}
	}
	c.Close()

	lines := readLines(t, logPath, len(cases)+2)
	if len(lines) != len(cases)+2 {
		t.Fatalf("%d lines:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	client := `client=127\.0\.0\.1:\d+`
	want := []string{}
	for _, tc := range cases {
		svc, up := "www.example.com", www
		switch tc.want.Backend {
		case "api":
			svc, up = "api.example.com", api
		case "v2":
			svc, up = "v2.example.com", v2
		}
		uri := tc.uri
		if strings.Contains(uri, "=") {
			uri = regexp.QuoteMeta(fmt.Sprintf("%q", uri))
		}
		want = append(want, fmt.Sprintf(`^time=\S+Z listener=http %s method=GET host=www\.example\.com uri=%s status=200 bytes=%d duration_ms=\d+\.\d{3} service=%s upstream=%s$`,
			client, uri, bodies[tc.uri], regexp.QuoteMeta(svc), regexp.QuoteMeta(up.String())))
	}
	want = append(want,
		`^time=\S+ listener=http `+client+` method=GET host=nosuch\.example\.com uri=/x status=404 bytes=\d+ duration_ms=\S+ service=nosuch\.example\.com upstream=-$`,
		`^time=\S+ listener=http `+client+` method=GET host=www\.example\.com uri=/api/ws status=101 bytes=33 duration_ms=\S+ service=api\.example\.com upstream=`+regexp.QuoteMeta(api.String())+`$`)
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i]) {
			t.Errorf("line %d:\n%s\ndoes not match\n%s", i, lines[i], w)
		}
	}

	// New routes with the next table: "/api/" gone, "/" to api without stripping.
	tp.applyBundle(routesBundle(2, "www.example.com", &pb.HTTPRoute{PathPrefix: "/", Service: "api.example.com"}))
	if _, body := curl(t, "http://"+addr+"/api/users", "-H", "Host: www.example.com"); !strings.Contains(body, `"uri":"/api/users"`) ||
		!strings.Contains(body, `"backend":"api"`) {
		t.Errorf("after the new table: %s", body)
	}

	// Reload to "off": no more lines.
	off := *tp.cfg.Agent
	off.Proxy.AccessLog = config.AccessLogOff
	if err := tp.Reload(&off); err != nil {
		t.Fatal(err)
	}
	curl(t, "http://"+addr+"/", "-H", "Host: www.example.com")
	time.Sleep(200 * time.Millisecond)
	if n := len(readLines(t, logPath, 1)); n != len(want)+1 {
		t.Errorf("%d lines after access_log = off, want %d", n, len(want)+1)
	}
}

// syncBuffer is a log sink read while the proxy writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHTTPAccessLogOn: proxy.access_log = "on" writes the lines to the agent's log, logger
// proxy.access, with the same fields.
func TestHTTPAccessLogOn(t *testing.T) {
	web := startNamedBackend(t, "web")
	res := newTestResolver()
	res.set("web.example.com", web)
	var out syncBuffer
	tp := startProxy(t, res, func(a *config.Config, c *Config) {
		c.DisableHTTP = false
		a.Proxy.AccessLog = config.AccessLogOn
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Info, Output: &out})
	})
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	if code, body := curl(t, "http://"+tp.http.Addr()+"/hello?a=1", "-H", "Host: web.example.com"); code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	re := regexp.MustCompile(`\[INFO\]  proxy\.access: request: listener=http client=127\.0\.0\.1:\d+ method=GET host=web\.example\.com uri=/hello\?a=1 status=200 bytes=\d+ duration_ms=\S+ service=web\.example\.com upstream=` +
		regexp.QuoteMeta(web.String()))
	waitFor(t, 10*time.Second, "the request in the agent log", func() bool { return re.MatchString(out.String()) })
}

// TestHTTPRouteTargetDown: a route's target that fails answers with the target's name, and a
// target without a replica gives the 503 of that target, not of the Host's service.
func TestHTTPRouteTargetDown(t *testing.T) {
	www := startNamedBackend(t, "www")
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := addrOf(t, dead.Addr())
	dead.Close()
	res := newTestResolver()
	res.set("www.example.com", www)
	res.set("broken.example.com", deadAddr)
	res.fail("down.example.com", fmt.Errorf("%w for %q", ErrNoReplica, "down.example.com"))
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.DisableHTTP = false })
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	tp.applyBundle(routesBundle(1, "www.example.com",
		&pb.HTTPRoute{PathPrefix: "/broken/", Service: "broken.example.com"},
		&pb.HTTPRoute{PathPrefix: "/down/", Service: "down.example.com"}))
	for _, tc := range []struct {
		path string
		code int
		text string
	}{
		{"/broken/x", 502, "<code>broken.example.com</code> did not answer"},
		{"/down/x", 503, "<code>down.example.com</code> has no healthy replica"},
		{"/fine", 200, `"backend":"www"`},
	} {
		code, body := curl(t, "http://"+tp.http.Addr()+tc.path, "-H", "Host: www.example.com")
		if code != tc.code || !strings.Contains(body, tc.text) {
			t.Errorf("%s: %d %q, want %d with %q", tc.path, code, body, tc.code, tc.text)
		}
	}
}

// TestHTTPAccessLogHTTPS: the HTTPS listener's requests (curl over TLS, HTTP/2) are logged
// with listener=https, the plain listener's with listener=http, and an https_redirect answer
// with its 308 and no service chosen. The log is turned on by a reload.
func TestHTTPAccessLogHTTPS(t *testing.T) {
	f := startHTTPSFixture(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	on := *f.tp.cfg.Agent
	on.Proxy.AccessLog = logPath
	if err := f.tp.Reload(&on); err != nil {
		t.Fatal(err)
	}
	if out, err := f.curlTLS(t, "web.example.com", "/secure?x=1"); err != nil || !strings.Contains(out, `"path":"/secure?x=1"`) {
		t.Fatalf("https: %v %s", err, out)
	}
	if code, body := curl(t, "http://"+f.httpAddr+"/plain", "-H", "Host: plain.example.com"); code != 200 {
		t.Fatalf("http: %d %s", code, body)
	}
	if code, _ := curl(t, "http://"+f.httpAddr+"/r", "-H", "Host: web.example.com"); code != 308 {
		t.Fatalf("redirect: %d", code)
	}
	lines := readLines(t, logPath, 3)
	want := []string{
		`listener=https client=127\.0\.0\.1:\d+ method=GET host=web\.example\.com:\d+ uri="/secure\?x=1" status=200 bytes=[1-9]\d* duration_ms=\S+ service=web\.example\.com upstream=127\.0\.0\.1:\d+$`,
		`listener=http client=127\.0\.0\.1:\d+ method=GET host=plain\.example\.com uri=/plain status=200 bytes=[1-9]\d* duration_ms=\S+ service=plain\.example\.com upstream=127\.0\.0\.1:\d+$`,
		`listener=http client=127\.0\.0\.1:\d+ method=GET host=web\.example\.com uri=/r status=308 bytes=\d+ duration_ms=\S+ service=- upstream=-$`,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i]) {
			t.Errorf("line %d:\n%s\ndoes not match\n%s", i, lines[i], w)
		}
	}
}

// TestHTTPRouteTargetPolicy: a route does not open a way around its target's allow-list: a
// client the target denies gets 403 through the route as through the target's own Host, while
// the Host's service itself still answers it.
func TestHTTPRouteTargetPolicy(t *testing.T) {
	www, api := startNamedBackend(t, "www"), startNamedBackend(t, "api")
	res := newTestResolver()
	res.set("www.example.com", www)
	res.set("api.example.com", api)
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.DisableHTTP = false })
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	http := pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP
	tp.applyBundle(&pb.PortMappingBundle{Version: 1, HttpServices: []*pb.PortMapping{
		{Service: "www.example.com", Protocol: http, Policy: &pb.ServicePolicy{
			Routes: []*pb.HTTPRoute{{PathPrefix: "/api/", Service: "api.example.com"}}}},
		{Service: "api.example.com", Protocol: http, Policy: &pb.ServicePolicy{Deny: []string{"127.0.0.0/8"}}},
	}})
	for _, tc := range []struct {
		host, path string
		code       int
	}{
		{"www.example.com", "/home", 200},
		{"www.example.com", "/api/x", 403},
		{"api.example.com", "/x", 403},
	} {
		if code, body := curl(t, "http://"+tp.http.Addr()+tc.path, "-H", "Host: "+tc.host); code != tc.code {
			t.Errorf("%s%s: %d, want %d (%s)", tc.host, tc.path, code, tc.code, body)
		}
	}
	if issued, _ := res.counts(); issued != 1 {
		t.Errorf("%d resolutions; refused requests must not reach the server", issued)
	}
}
