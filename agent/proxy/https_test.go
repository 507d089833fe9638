package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/proxy/tlsterm"
	"github.com/nullnet/nullnet/agent/proxy/tlsterm/testcert"
	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// httpsFixture is a real proxy with both listeners on free ports, certificates from a test CA
// (ECDSA P-256) and an upstream that echoes what it received (JSON) or a WebSocket's bytes.
type httpsFixture struct {
	tp        *testProxy
	ca        *testcert.CA
	caFile    string
	httpAddr  string
	httpsAddr string
	port      string // HTTPS port
}

const hstsAge = 180 * 24 * 3600

func startHTTPSFixture(t *testing.T) *httpsFixture {
	t.Helper()
	upstream := httptest.NewServer(wsEchoHandler(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"host": r.Host, "path": r.URL.RequestURI(), "header": r.Header})
	}))
	t.Cleanup(upstream.Close)
	up := netip.MustParseAddrPort(strings.TrimPrefix(upstream.URL, "http://"))
	res := newTestResolver()
	for _, s := range []string{"web.example.com", "a.wild.example.com", "plain.example.com", "acme.example.com"} {
		res.set(s, up)
	}

	ca := testcert.NewCA(t)
	snap := &certs.Snapshot{
		ByName: map[string]*tls.Certificate{
			"web.example.com":    ca.Issue(t, "web.example.com").TLS,
			"plain.example.com":  ca.Issue(t, "plain.example.com").TLS,
			"*.wild.example.com": ca.Issue(t, "*.wild.example.com").TLS,
		},
		HTTPChallenges:    map[string]string{"tok-123": "tok-123.thumbprint"},
		TLSALPNChallenges: map[string]*tls.Certificate{"acme.example.com": ca.Issue(t, "acme.example.com").TLS},
	}
	tp := startProxy(t, res, func(_ *config.Config, c *Config) { c.DisableHTTP = false })
	tp.Certificates().Replace(snap)
	// The policies as the port table carries them (http_services), without a server.
	http := pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP
	tp.setPolicies(servicepolicy.NewIndex(&pb.PortMappingBundle{Version: 1, HttpServices: []*pb.PortMapping{
		{Service: "web.example.com", Protocol: http, Policy: &pb.ServicePolicy{HttpsRedirect: true, HstsMaxAgeSecs: hstsAge}},
		{Service: "plain.example.com", Protocol: http, Policy: &pb.ServicePolicy{HstsMaxAgeSecs: hstsAge}},
		{Service: "a.wild.example.com", Protocol: http},
	}}))
	waitFor(t, 10*time.Second, "HTTP and HTTPS listeners bound", func() bool {
		return tp.http.Addr() != "" && tp.https.Addr() != ""
	})
	f := &httpsFixture{tp: tp, ca: ca, caFile: ca.WriteCA(t, t.TempDir()), httpAddr: tp.http.Addr(), httpsAddr: tp.https.Addr()}
	f.port = portOf(f.httpsAddr)
	return f
}

// curlTLS runs curl against the HTTPS listener for name (resolved to the listener) and
// returns everything it printed (-v goes to stderr, merged) and its exit error.
func (f *httpsFixture) curlTLS(t *testing.T, name, path string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("this test needs curl (apt-get install curl): %v", err)
	}
	all := append([]string{"-sS", "--max-time", "20", "--cacert", f.caFile,
		"--resolve", fmt.Sprintf("%s:%s:127.0.0.1", name, f.port), fmt.Sprintf("https://%s:%s%s", name, f.port, path)}, args...)
	out, err := exec.Command(bin, all...).CombinedOutput()
	return string(out), err
}

// sClient runs openssl s_client against the HTTPS listener and returns its output.
func (f *httpsFixture) sClient(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("this test needs openssl (apt-get install openssl): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"s_client", "-connect", f.httpsAddr, "-CAfile", f.caFile}, args...)...)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func upstreamSaw(t *testing.T, body string) (host string, h http.Header) {
	t.Helper()
	var seen struct {
		Host   string      `json:"host"`
		Header http.Header `json:"header"`
	}
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	return seen.Host, seen.Header
}

// TestHTTPSListener: curl and openssl s_client against a real proxy's HTTPS listener:
// certificate by SNI (exact and wildcard), the alert unrecognized_name for an unknown name and
// for no name, h2 negotiated, X-Forwarded-* with proto https, HSTS on HTTPS only, 308 to HTTPS
// with the listener's port, WebSocket over TLS, and both ACME challenges.
func TestHTTPSListener(t *testing.T) {
	f := startHTTPSFixture(t)

	// h2 through curl, and what the upstream saw.
	out, err := f.curlTLS(t, "web.example.com", "/a/b?c=d", "--http2", "-v", "-H", "X-Forwarded-Proto: http")
	if err != nil {
		t.Fatalf("curl --http2: %v\n%s", err, out)
	}
	if !strings.Contains(out, "< HTTP/2 200") || !strings.Contains(out, "ALPN: server accepted h2") {
		t.Errorf("h2 not negotiated:\n%s", out)
	}
	if !strings.Contains(strings.ToLower(out), fmt.Sprintf("< strict-transport-security: max-age=%d", hstsAge)) {
		t.Errorf("no HSTS header on HTTPS:\n%s", out)
	}
	host, h := upstreamSaw(t, out[strings.LastIndex(out, "\n{\"")+1:])
	want := map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Port": f.port,
		"X-Forwarded-Host": "web.example.com:" + f.port, "X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1"}
	for k, v := range want {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("upstream saw %s=%q, want %q", k, got, v)
		}
	}
	if host != "web.example.com:"+f.port {
		t.Errorf("upstream saw Host %q", host)
	}

	// HTTP/1.1 when the client asks for it.
	if out, err := f.curlTLS(t, "plain.example.com", "/", "--http1.1", "-v"); err != nil || !strings.Contains(out, "< HTTP/1.1 200") {
		t.Errorf("curl --http1.1: %v\n%s", err, out)
	}

	// Wildcard: curl verifies the name against *.wild.example.com; s_client shows the subject.
	if out, err := f.curlTLS(t, "a.wild.example.com", "/", "-o", "/dev/null", "-w", "%{http_code}"); err != nil || out != "200" {
		t.Errorf("wildcard: %v %s", err, out)
	}
	out = f.sClient(t, "-servername", "a.wild.example.com")
	if !strings.Contains(out, "CN = *.wild.example.com") || !strings.Contains(out, "Verify return code: 0 (ok)") {
		t.Errorf("s_client a.wild.example.com:\n%s", out)
	}
	out = f.sClient(t, "-servername", "web.example.com")
	if !strings.Contains(out, "CN = web.example.com") || !strings.Contains(out, "Verify return code: 0 (ok)") {
		t.Errorf("s_client web.example.com:\n%s", out)
	}

	// Unknown name and no name: alert 112, and no certificate at all.
	for _, args := range [][]string{{"-servername", "nosuch.example.com"}, {"-servername", "x.a.wild.example.com"}, {"-noservername"}} {
		out := f.sClient(t, args...)
		if !strings.Contains(out, "unrecognized name") || !strings.Contains(out, "SSL alert number 112") {
			t.Errorf("s_client %v: want alert unrecognized_name (112):\n%s", args, out)
		}
		if !strings.Contains(out, "no peer certificate available") || strings.Contains(out, "CN = ") {
			t.Errorf("s_client %v: a certificate was presented:\n%s", args, out)
		}
	}
	waitFor(t, 10*time.Second, "tls_handshake_failed events", func() bool {
		evs, _ := f.tp.events.Since(0)
		var unknown, nosni bool
		for _, e := range evs {
			if e.Kind == events.TLSHandshakeFailed {
				unknown = unknown || e.Fields["reason"] == "unknown_name" && e.Fields["server_name"] == "nosuch.example.com"
				nosni = nosni || e.Fields["reason"] == "no_sni"
			}
		}
		return unknown && nosni
	})

	// https_redirect: 308 to https://<host>:<port><uri> (a non-443 HTTPS port is kept); no HSTS
	// on plain HTTP; a service without the key is served over HTTP.
	code, loc, sts := plainGet(t, f.httpAddr, "web.example.com:80", "/p/q?x=1&y=%2F")
	if code != http.StatusPermanentRedirect || loc != "https://web.example.com:"+f.port+"/p/q?x=1&y=%2F" || sts != "" {
		t.Errorf("redirect: %d Location %q HSTS %q", code, loc, sts)
	}
	code, loc, sts = plainGet(t, f.httpAddr, "plain.example.com", "/")
	if code != 200 || loc != "" || sts != "" {
		t.Errorf("plain HTTP without https_redirect: %d Location %q HSTS %q", code, loc, sts)
	}

	// ACME HTTP-01: answered before Host routing and before the redirect; an unknown token
	// goes the usual way.
	bin, _ := exec.LookPath("curl")
	out2, err := exec.Command(bin, "-sS", "--max-time", "20", "-H", "Host: web.example.com",
		"http://"+f.httpAddr+"/.well-known/acme-challenge/tok-123").CombinedOutput()
	if err != nil || string(out2) != "tok-123.thumbprint" {
		t.Errorf("HTTP-01: %v %q", err, out2)
	}
	if code, _, _ := plainGet(t, f.httpAddr, "web.example.com", "/.well-known/acme-challenge/other"); code != http.StatusPermanentRedirect {
		t.Errorf("unknown token: %d, want the service's own handling (308)", code)
	}

	// TLS-ALPN-01: acme-tls/1 gets the challenge certificate with the protocol negotiated.
	c, err := tls.Dial("tcp", f.httpsAddr, &tls.Config{ServerName: "acme.example.com", RootCAs: f.ca.Pool,
		NextProtos: []string{tlsterm.ALPNACME}})
	if err != nil {
		t.Fatalf("acme-tls/1: %v", err)
	}
	st := c.ConnectionState()
	if st.NegotiatedProtocol != tlsterm.ALPNACME || st.PeerCertificates[0].Subject.CommonName != "acme.example.com" {
		t.Errorf("acme-tls/1: protocol %q, certificate %q", st.NegotiatedProtocol, st.PeerCertificates[0].Subject.CommonName)
	}
	c.Close()

	// WebSocket over TLS (HTTP/1.1 upgrade).
	wc, err := tls.Dial("tcp", f.httpsAddr, &tls.Config{ServerName: "web.example.com", RootCAs: f.ca.Pool,
		NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	_ = wc.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(wc, "GET /ws HTTP/1.1\r\nHost: web.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(wc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("wss upgrade: %v %v", resp, err)
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS on the upgrade response")
	}
	_, _ = wc.Write([]byte("frame-over-tls"))
	got := make([]byte, len("frame-over-tls"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "frame-over-tls" {
		t.Fatalf("after wss upgrade: %q %v", got, err)
	}
}

// plainGet sends one HTTP/1.1 request to the :80 listener without following redirects.
func plainGet(t *testing.T, addr, host, path string) (code int, location, hsts string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Host = host
	client := &http.Client{Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Strict-Transport-Security")
}

func TestRedirectHost(t *testing.T) {
	for _, tc := range []struct{ configured, bound, want string }{
		{":443", "", "web.example.com"},
		{"0.0.0.0:443", "0.0.0.0:443", "web.example.com"},
		{":8443", "", "web.example.com:8443"},
		{"127.0.0.1:0", "127.0.0.1:34567", "web.example.com:34567"},
		{"", "", "web.example.com"}, // HTTPS off here: another front end terminates it on 443
	} {
		h := &httpsServer{p: &Proxy{httpsAddr: tc.configured}}
		if tc.bound != "" {
			h.addr.Store(&tc.bound)
		}
		if got := h.redirectHost("web.example.com"); got != tc.want {
			t.Errorf("https_addr %q bound %q: %q, want %q", tc.configured, tc.bound, got, tc.want)
		}
	}
}

// TestHTTPSBindRetry: a taken HTTPS port is retried with one event, shown in the status, and
// the listener opens once the port is free; Drain then closes it.
func TestLogLimiter(t *testing.T) {
	var buf strings.Builder
	lg := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug})
	l := &logLimiter{next: lg, max: 3, every: time.Hour}
	for i := range 100 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	if n := strings.Count(buf.String(), "line "); n != 3 {
		t.Fatalf("%d lines passed, want 3:\n%s", n, buf.String())
	}
	l.start = time.Now().Add(-2 * time.Hour)
	fmt.Fprintf(l, "line again\n")
	if !strings.Contains(buf.String(), "suppressed: count=97") || !strings.Contains(buf.String(), "line again") {
		t.Fatalf("no summary:\n%s", buf.String())
	}
}

func TestHTTPSBindRetry(t *testing.T) { testFrontBindRetry(t, "https") }

// The HTTP router retries a port that is taken as the HTTPS listener does, instead of failing
// Run.
func TestHTTPBindRetry(t *testing.T) { testFrontBindRetry(t, "http") }

// testFrontBindRetry: a taken port gives one event per distinct error and the error in the
// status, the listener binds once the port is freed, and Drain closes it.
func testFrontBindRetry(t *testing.T, protocol string) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := hold.Addr().String()
	tp := startProxy(t, newTestResolver(), func(a *config.Config, c *Config) {
		c.DisableHTTP = false
		if protocol == "https" {
			a.Proxy.HTTPSAddr = addr
		} else {
			a.Proxy.HTTPAddr = addr
		}
	})
	bindErr, bound := func() string { return tp.status().HTTPSError }, tp.https.Addr
	if protocol == "http" {
		bindErr, bound = func() string { return tp.status().HTTPError }, tp.http.Addr
	}
	waitFor(t, 10*time.Second, "bind failure reported", func() bool {
		return tp.hasEvent(events.TCPListenerBindFailed) && bindErr() != ""
	})
	hold.Close()
	waitFor(t, 10*time.Second, "listener bound after the port was freed", func() bool {
		return bound() == addr && bindErr() == ""
	})
	if protocol == "http" {
		if code, _ := curl(t, "http://"+addr+"/", "-H", "Host: nobody.example.com"); code == 0 {
			t.Fatal("no HTTP answer after the bind")
		}
	}
	n := 0
	evs, _ := tp.events.Since(0)
	for _, e := range evs {
		if e.Kind == events.TCPListenerBindFailed {
			n++
			if e.Fields["protocol"] != protocol {
				t.Errorf("bind failure event %v", e.Fields)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d bind failure events for one error, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tp.Drain(ctx)
	waitFor(t, 10*time.Second, "listener closed by Drain", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}
