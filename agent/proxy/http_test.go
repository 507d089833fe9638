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
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nullnet/nullnet/config"
)

func TestServiceFromHost(t *testing.T) {
	cases := map[string]string{
		"web":              "web",
		"web:8080":         "web",
		"Web.Example.COM.": "web.example.com",
		"[::1]:80":         "::1",
		"[::1]":            "::1",
		"":                 "",
	}
	for in, want := range cases {
		if got := serviceFromHost(in); got != want {
			t.Errorf("serviceFromHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHTTPRouter: Host routing with X-Forwarded-*, the 404/502/503 pages, WebSocket upgrades
// passing through, and one lease per request, each released.
func TestHTTPRouter(t *testing.T) {
	upstream := httptest.NewServer(wsEchoHandler(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"host": r.Host, "xff": r.Header.Get("X-Forwarded-For"),
			"proto": r.Header.Get("X-Forwarded-Proto"), "xhost": r.Header.Get("X-Forwarded-Host"), "path": r.URL.RequestURI()})
	}))
	defer upstream.Close()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := addrOf(t, dead.Addr())
	dead.Close()

	res := newTestResolver()
	res.set("web", netip.MustParseAddrPort(strings.TrimPrefix(upstream.URL, "http://")))
	res.set("broken", deadAddr)
	res.fail("down", fmt.Errorf("%w for %q", ErrNoReplica, "down"))
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.DisableHTTP = false })
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	addr := tp.http.Addr()

	get := func(host, path string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = host
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s%s: %v", host, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	resp, body := get("web:8080", "/a/b?c=d", map[string]string{"X-Forwarded-For": "6.6.6.6"})
	if resp.StatusCode != 200 {
		t.Fatalf("web: status %d body %s", resp.StatusCode, body)
	}
	var seen map[string]string
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	want := map[string]string{"host": "web:8080", "xff": "127.0.0.1", "proto": "http", "xhost": "web:8080", "path": "/a/b?c=d"}
	for k, v := range want {
		if seen[k] != v {
			t.Errorf("upstream saw %s=%q, want %q (all: %v)", k, seen[k], v, seen)
		}
	}

	for _, tc := range []struct {
		host string
		code int
		text string
	}{
		{"nosuch.example", 404, "No service named <code>nosuch.example</code>"},
		{"203.0.113.7:8080", 404, "<code>203.0.113.7</code>"},
		{"bad_name!", 404, "Unknown host"},
		{"down", 503, "no healthy replica"},
		{"broken", 502, "did not answer"},
	} {
		resp, body := get(tc.host, "/", nil)
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.text) {
			t.Errorf("host %q: status %d body %q, want %d containing %q", tc.host, resp.StatusCode, body, tc.code, tc.text)
		}
	}

	// WebSocket: the upgrade goes through and bytes flow both ways afterwards.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	wsResp, err := http.ReadResponse(br, nil)
	if err != nil || wsResp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", wsResp, err)
	}
	if _, err := c.Write([]byte("frame-bytes")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("frame-bytes"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "frame-bytes" {
		t.Fatalf("after upgrade: %q %v", got, err)
	}
	c.Close()

	// web, broken, websocket: three leases (lookups that failed took none), all released.
	waitFor(t, 10*time.Second, "every request's lease released", func() bool {
		issued, released := res.counts()
		return issued == 3 && released == 3
	})
	res.checkNoDoubleRelease(t)
}

// startHeaderEcho starts an upstream that answers with the headers it received (JSON) and
// counts requests, and a proxy routing service "web" to it.
func startHeaderEcho(t *testing.T) (addr string, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(upstream.Close)
	res := newTestResolver()
	res.set("web", netip.MustParseAddrPort(strings.TrimPrefix(upstream.URL, "http://")))
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.DisableHTTP = false })
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	return tp.http.Addr(), hits
}

// curl runs curl against the proxy and returns the status code and the body. curl is a real
// client that sends headers exactly as given (underscores included).
func curl(t *testing.T, url string, args ...string) (int, string) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("this test needs curl (apt-get install curl): %v", err)
	}
	out, err := exec.Command(bin, append([]string{"-sS", "--max-time", "20", "-w", "\n%{http_code}", url}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %s: %v (%s)", url, err, out)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	code, err := strconv.Atoi(s[i+1:])
	if err != nil {
		t.Fatalf("curl status %q: %v", s[i+1:], err)
	}
	return code, s[:i]
}

// TestHTTPRouterForwardingHeaders: whatever forwarding headers a client sends (X-Forwarded-*
// of any suffix, X-Real-IP, Forwarded, underscore spellings), the upstream sees only the
// proxy's: the client's real address and the port it connected to.
func TestHTTPRouterForwardingHeaders(t *testing.T) {
	addr, _ := startHeaderEcho(t)
	_, port, _ := net.SplitHostPort(addr)
	code, body := curl(t, "http://"+addr+"/x", "-H", "Host: web",
		"-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Forwarded-Host: evil", "-H", "X-Forwarded-Proto: https",
		"-H", "X-Real-IP: 6.6.6.6", "-H", "X-Forwarded-Port: 1", "-H", "X-Forwarded-Server: evil",
		"-H", "X-Forwarded-Prefix: /admin", "-H", "X-Forwarded-Ssl: on", "-H", "X-Forwarded: for=6.6.6.6",
		"-H", "Forwarded: for=6.6.6.6;proto=https", "-H", "X_Forwarded_For: 6.6.6.6", "-H", "x_real_ip: 6.6.6.6",
		"-H", "X-Other: kept")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var seen http.Header
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	want := map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1", "X-Forwarded-Proto": "http",
		"X-Forwarded-Host": "web", "X-Forwarded-Port": port, "X-Other": "kept"}
	for name, values := range seen {
		if w, ours := want[name]; ours {
			if len(values) != 1 || values[0] != w {
				t.Errorf("upstream saw %s=%q, want [%q]", name, values, w)
			}
			continue
		}
		if isForwardingHeader(name) {
			t.Errorf("client's %s=%q reached the upstream", name, values)
		}
		for _, v := range values {
			if strings.Contains(v, "6.6.6.6") || v == "evil" || v == "/admin" {
				t.Errorf("forged value %s=%q reached the upstream", name, v)
			}
		}
	}
	for name := range want {
		if seen.Get(name) == "" {
			t.Errorf("upstream did not get %s (all: %v)", name, seen)
		}
	}
}

// TestHTTPRouterHeaderLimits: a header line over 8 KiB, a 70 KiB one and a head over 64 KiB
// in total get 431 (a request target over 8 KiB: 414) and never reach the upstream; a 7 KiB
// header still passes.
func TestHTTPRouterHeaderLimits(t *testing.T) {
	addr, hits := startHeaderEcho(t)
	manySmall := []string{"-H", "Host: web"}
	for i := range 20 { // 20 × 4 KiB = 80 KiB in total, each line well under 8 KiB
		manySmall = append(manySmall, "-H", fmt.Sprintf("X-Fill-%d: %s", i, strings.Repeat("f", 4<<10)))
	}
	for _, tc := range []struct {
		name string
		path string
		args []string
		code int
	}{
		{"7 KiB header", "/", []string{"-H", "Host: web", "-H", "X-Big: " + strings.Repeat("a", 7<<10)}, 200},
		{"9 KiB header", "/", []string{"-H", "Host: web", "-H", "X-Big: " + strings.Repeat("a", 9<<10)}, 431},
		{"70 KiB header", "/", []string{"-H", "Host: web", "-H", "X-Big: " + strings.Repeat("a", 70<<10)}, 431},
		{"80 KiB head", "/", manySmall, 431},
		{"9 KiB target", "/" + strings.Repeat("p", 9<<10), []string{"-H", "Host: web"}, 414},
	} {
		before := hits.Load()
		code, body := curl(t, "http://"+addr+tc.path, tc.args...)
		if code != tc.code {
			t.Errorf("%s: status %d, want %d (%.200s)", tc.name, code, tc.code, body)
		}
		if reached := hits.Load() > before; reached != (tc.code == 200) {
			t.Errorf("%s: upstream reached=%v", tc.name, reached)
		}
	}
}

// FuzzServiceFromHost: any Host header maps to a service name without panicking, and a
// result that is a valid service name is lower-case, without port or trailing dot.
func FuzzServiceFromHost(f *testing.F) {
	for _, s := range []string{"web", "web:8080", "Web.Example.COM.", "[::1]:80", "[::1", "]:", ":", "", "a:b:c", "[", "WEB.:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		svc := serviceFromHost(host)
		if config.ValidServiceName(svc) {
			if svc != strings.ToLower(svc) || strings.ContainsAny(svc, ":[]") || strings.HasSuffix(svc, ".") {
				t.Fatalf("serviceFromHost(%q) = %q: not a normalised name", host, svc)
			}
		}
	})
}

// wsEchoHandler is an upstream that answers plain requests with answer and, on a WebSocket
// upgrade, switches protocols and echoes the bytes after it (frames as opaque bytes).
func wsEchoHandler(t *testing.T, answer http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			answer(w, r)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	}
}
