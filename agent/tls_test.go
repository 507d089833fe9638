package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/tlsutil"
)

// testPKI is a CA in a temp dir that issues certificates as `nullnet tls cert create` does.
type testPKI struct {
	dir string
	ca  *tlsutil.CA
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, err := tlsutil.CreateCA("dc1", 1)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: t.TempDir(), ca: ca}
	if err := os.WriteFile(p.caFile(), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPKI) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// issue writes a certificate and key and returns their paths.
func (p *testPKI) issue(t *testing.T, role, node string) (certFile, keyFile string) {
	t.Helper()
	cert, key, err := p.ca.Issue(tlsutil.CertRequest{Role: role, Node: node, Datacenter: "dc1", Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, role+"-"+node+".pem"), filepath.Join(p.dir, role+"-"+node+"-key.pem")
	if err := os.WriteFile(certFile, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// tlsBlock is the agent's tls block, as an operator writes it.
func (p *testPKI) tlsBlock(certFile, keyFile string) string {
	return fmt.Sprintf("tls {\n  ca_file = %q\n  cert_file = %q\n  key_file = %q\n  verify_incoming = true\n"+
		"  verify_outgoing = true\n  verify_server_hostname = true\n}\n", p.caFile(), certFile, keyFile)
}

// client is an HTTPS client that verifies the agent against the CA, with a client certificate
// when certFile is set.
func (p *testPKI) client(t *testing.T, certFile, keyFile string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.ca.CertPEM)
	tc := &tls.Config{RootCAs: pool}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
}

func httpStatus(t *testing.T, c *http.Client, method, url string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestAgentTLSSelfCheckQuiet: with TLS and verify_incoming on, the agent's own Consul check
// passes over HTTPS without a client certificate and leaves no "TLS handshake error" in the
// log over a check cycle; net/http's own error lines go through hclog, never in Go's standard
// log format.
func TestAgentTLSSelfCheckQuiet(t *testing.T) {
	a := startTLSTestAgent(t, hclog.Debug)
	srv, p, cert, key, logs := a.consul, a.pki, a.cert, a.key, a.logs

	// The curl of the docs works: the server certificate names 127.0.0.1.
	base := "https://" + a.HTTPAddr()
	if code := httpStatus(t, p.client(t, "", ""), "GET", base+HealthPath); code != 200 {
		t.Fatalf("GET %s without a client certificate: %d, want 200", HealthPath, code)
	}
	if code := httpStatus(t, p.client(t, "", ""), "GET", base+"/v1/agent/self"); code != 401 {
		t.Fatalf("GET /v1/agent/self without a client certificate: %d, want 401", code)
	}
	if code := httpStatus(t, p.client(t, cert, key), "GET", base+"/v1/agent/self"); code != 200 {
		t.Fatalf("GET /v1/agent/self with a certificate: %d, want 200", code)
	}

	// Wait for Consul's check of the agent to pass: it has probed the HTTPS API.
	c := srv.Client(t)
	id := "nullnet-agent-test"
	var passedAt time.Time
	deadline := time.Now().Add(25 * time.Second)
	for passedAt.IsZero() {
		checks, _, err := c.Health().Checks("nullnet", nil)
		if err == nil {
			for _, ch := range checks {
				if ch.ServiceID == id && ch.Status == api.HealthPassing {
					passedAt = time.Now()
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's Consul check never passed: %v %v", checks, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// One more full check cycle (10 s) must leave no handshake errors either.
	time.Sleep(11 * time.Second)
	if l := logs.String(); strings.Contains(l, "TLS handshake error") {
		t.Fatalf("the agent logged TLS handshake errors with its own check:\n%s", grepLines(l, "TLS handshake error"))
	}

	// A plain TCP probe (what the check used to be) is logged through hclog, at debug.
	conn, err := net.Dial("tcp", a.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "TLS handshake error") {
		if time.Now().After(deadline) {
			t.Fatal("a TCP probe's handshake EOF was not logged at all")
		}
		time.Sleep(20 * time.Millisecond)
	}
	line := grepLines(logs.String(), "TLS handshake error")
	if !strings.Contains(line, "[DEBUG] test.http: http: TLS handshake error") {
		t.Fatalf("handshake error not logged through hclog at debug: %q", line)
	}
	if m := regexp.MustCompile(`(?m)^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d `).FindString(logs.String()); m != "" {
		t.Fatalf("a line in Go's standard log format: %q", m)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHTTPAPIRoles: the HTTPS API follows the gRPC API's rule that authority follows identity:
// any certificate of the CA reads, only an operator (cli) certificate writes, and refusals are
// aggregated auth_refused events.
func TestHTTPAPIRoles(t *testing.T) {
	saved := aggregateInterval
	aggregateInterval = 200 * time.Millisecond
	defer func() { aggregateInterval = saved }()

	a := startTLSTestAgent(t, hclog.Info)
	p := a.pki

	base := "https://" + a.HTTPAddr()
	anon := p.client(t, "", "")
	nc, nk := p.issue(t, tlsutil.RoleProxy, "edge1")
	node := p.client(t, nc, nk)
	oc, ok := p.issue(t, tlsutil.RoleCLI, "alice")
	op := p.client(t, oc, ok)
	for _, tc := range []struct {
		who    string
		c      *http.Client
		method string
		path   string
		want   int
	}{
		{"anonymous", anon, "GET", "/v1/sessions", 401},
		{"anonymous", anon, "DELETE", "/v1/sessions/nope", 401},
		{"anonymous", anon, "GET", HealthPath, 200},
		{"node", node, "GET", "/v1/sessions", 200},
		{"node", node, "GET", "/v1/agent/self", 200},
		{"node", node, "DELETE", "/v1/sessions/nope", 403},
		{"operator", op, "GET", "/v1/sessions", 200},
		{"operator", op, "DELETE", "/v1/sessions/nope", 404}, // let through: no such session
	} {
		if got := httpStatus(t, tc.c, tc.method, base+tc.path); got != tc.want {
			t.Errorf("%s %s %s: %d, want %d", tc.who, tc.method, tc.path, got, tc.want)
		}
	}
	time.Sleep(3 * aggregateInterval)
	evs, _ := a.events.Since(0)
	var reasons []string
	for _, e := range evs {
		if e.Kind == "auth_refused" && e.Fields["peer"] == "127.0.0.1" {
			reasons = append(reasons, e.Fields["method"]+": "+e.Fields["reason"])
		}
	}
	joined := strings.Join(reasons, "\n")
	if !strings.Contains(joined, "client certificate signed by the CA is required") ||
		!strings.Contains(joined, "DELETE /v1/sessions/nope: DELETE needs an operator certificate") {
		t.Fatalf("refusals not recorded as auth_refused events:\n%s", joined)
	}
}

// tlsTestAgent is an agent with every API behind mutual TLS (its certificate: server role,
// node agent-test), running against a real Consul until the test ends.
type tlsTestAgent struct {
	*Agent
	pki       *testPKI
	cert, key string
	consul    *consultest.Server
	logs      *syncBuffer // everything the agent logged at level and above
}

func startTLSTestAgent(t *testing.T, level hclog.Level) *tlsTestAgent {
	t.Helper()
	srv := consultest.Start(t)
	p := newTestPKI(t)
	cert, key := p.issue(t, tlsutil.RoleServer, "agent-test")
	logs := &syncBuffer{}
	a, err := New(testConfig(t, srv.HTTPAddr, p.tlsBlock(cert, key)),
		hclog.New(&hclog.LoggerOptions{Name: "test", Level: level, Output: logs}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	return &tlsTestAgent{Agent: a, pki: p, cert: cert, key: key, consul: srv, logs: logs}
}
