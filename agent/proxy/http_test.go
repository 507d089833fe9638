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
	"strings"
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
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer c.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			_, _ = io.Copy(c, brw) // echo frames as opaque bytes
			return
		}
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
