package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/server/acme/pebbletest"
	"github.com/nullnet/nullnet/config"
)

// TestACMEThroughProxy: a real agent (server + proxy) against a real Consul and a real ACME
// server (Pebble) whose validation authority resolves every name to 127.0.0.1. The stack asks
// for a certificate with acme = true; the policy reaches the server's definitions, the issuer
// orders, the challenges and then the certificate travel through Consul KV, the certificate
// store and WatchCertificates into the proxy's certificate set, and openssl s_client is shown
// the certificate, chained to Pebble's root. A restarted agent serves it again from Consul KV
// without a new order.
//
// Pebble validates against listeners that answer from the proxy's certificate set exactly as
// the proxy's own :80 and :443 listeners do (acmeListeners); they stand in until those
// listeners answer challenges themselves.
func TestACMEThroughProxy(t *testing.T) {
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) { testACMEThroughProxy(t, challenge) })
	}
}

func testACMEThroughProxy(t *testing.T, challenge string) {
	consul := consultest.Start(t)
	var sets acmeSets
	httpPort, httpsPort := acmeListeners(t, &sets)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})

	cfg := testConfig(t, consul.HTTPAddr, fmt.Sprintf("proxy {\n  enabled = true\n  http_addr = \"127.0.0.1:%d\"\n}\n", freePort(t)))
	cfg.Proxy.Servers = []string{fmt.Sprintf("127.0.0.1:%d", cfg.Ports.GRPC)} // this agent's own server
	cfg.Server.ACME = &config.ACME{Email: "ops@example.com", DirectoryURL: pebble.DirectoryURL, CAFile: pebble.CAFile,
		Challenge: challenge, RenewBefore: config.DefaultACMERenewBefore}
	const domain = "shop.example.com"
	stack := fmt.Sprintf("stack \"shop\" {\n  service %q {\n    timeout = 60\n    acme = true\n  }\n}\n", domain)
	if err := os.WriteFile(filepath.Join(cfg.Server.StacksDir, "shop.hcl"), []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	a, stop := startACMEAgent(t, cfg, "first")
	sets.set(a.proxy.Certificates())
	served := func(a *Agent) []byte {
		c, ok := a.proxy.Certificates().Current().Lookup(domain)
		if !ok {
			return nil
		}
		return c.Certificate[0]
	}
	waitFor(t, "the ACME certificate on the proxy", 90*time.Second, func() bool { return served(a) != nil })
	t.Logf("%s: stack file to certificate on the proxy in %s", challenge, time.Since(start).Round(time.Millisecond))

	httpsAddr := fmt.Sprintf("127.0.0.1:%d", httpsPort)
	leaf := opensslLeaf(t, httpsAddr, domain)
	if !bytes.Equal(leaf, served(a)) {
		t.Fatal("openssl was not shown the proxy's ACME certificate")
	}
	c, _ := a.proxy.Certificates().Current().Lookup(domain)
	verifyPebbleChain(t, pebble, c.Certificate, domain)
	if n := pebble.Issued(); n != 1 {
		t.Fatalf("pebble issued %d certificates, want 1", n)
	}
	// No challenge is left behind in the proxy's set.
	waitFor(t, "challenges cleared on the proxy", 10*time.Second, func() bool {
		s := a.proxy.Certificates().Current()
		return len(s.HTTPChallenges) == 0 && len(s.TLSALPNChallenges) == 0
	})
	if challenge != "http-01" {
		return
	}

	// Restart: the new agent serves the certificate from KV, and orders nothing.
	stop()
	b, _ := startACMEAgent(t, cfg, "restarted")
	sets.set(b.proxy.Certificates())
	waitFor(t, "the certificate after a restart", 30*time.Second, func() bool { return served(b) != nil })
	if !bytes.Equal(served(b), leaf) {
		t.Fatal("the restarted agent serves another certificate")
	}
	if got := opensslLeaf(t, httpsAddr, domain); !bytes.Equal(got, leaf) {
		t.Fatal("openssl was shown another certificate after the restart")
	}
	time.Sleep(3 * time.Second) // an order would have been placed by now
	if n := pebble.Issued(); n != 1 {
		t.Fatalf("pebble issued %d certificates after the restart, want still 1", n)
	}
}

// startACMEAgent runs an agent until stop (or the end of the test); its logs are shown when the
// test fails.
func startACMEAgent(t *testing.T, cfg *config.Config, name string) (*Agent, func()) {
	t.Helper()
	logs := &syncBuffer{}
	a, err := New(cfg, hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: logs}))
	if err != nil {
		t.Fatalf("New %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, logs.String())
		}
	}
	t.Cleanup(stop)
	return a, stop
}

// verifyPebbleChain checks that chain (DER, leaf first) is a certificate for domain issued by
// Pebble's root.
func verifyPebbleChain(t *testing.T, p *pebbletest.Pebble, chain [][]byte, domain string) {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("the proxy serves %d certificates, want leaf + intermediate", len(chain))
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: domain, Roots: p.Roots(t), Intermediates: inter}); err != nil {
		t.Fatalf("the served certificate does not chain to Pebble's root: %v", err)
	}
}

// acmeSets is the proxy certificate set the stand-in listeners answer from (the agent's proxy
// changes when the test restarts it).
type acmeSets struct{ p atomic.Pointer[certs.Set] }

func (s *acmeSets) set(c *certs.Set) { s.p.Store(c) }

func (s *acmeSets) current() *certs.Snapshot {
	if c := s.p.Load(); c != nil {
		return c.Current()
	}
	return &certs.Snapshot{}
}

// acmeListeners serves, on loopback, what the proxy's listeners serve from its certificate
// set: HTTP-01 key authorizations at /.well-known/acme-challenge/<token>, and on TLS the
// TLS-ALPN-01 certificate for a client offering acme-tls/1, else the certificate for the SNI
// name (exact, then wildcard).
func acmeListeners(t *testing.T, sets *acmeSets) (httpPort, httpsPort int) {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		ka, found := sets.current().HTTPChallenges[tok]
		if !ok || !found {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(ka))
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })

	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"acme-tls/1"},
		GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			snap := sets.current()
			if slices.Contains(hi.SupportedProtos, "acme-tls/1") {
				if c := snap.TLSALPNChallenges[hi.ServerName]; c != nil {
					return c, nil
				}
				return nil, fmt.Errorf("no challenge for %q", hi.ServerName)
			}
			if c, ok := snap.Lookup(hi.ServerName); ok {
				return c, nil
			}
			return nil, fmt.Errorf("no certificate for %q", hi.ServerName)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return hl.Addr().(*net.TCPAddr).Port, tl.Addr().(*net.TCPAddr).Port
}

// TestACMETwoServersOneOrder: two server agents with the same stacks against one Consul and one
// Pebble both want the certificate; one order is placed, and both servers' certificate stores
// (what their proxies receive) hold the same certificate.
func TestACMETwoServersOneOrder(t *testing.T) {
	consul := consultest.Start(t)
	var sets acmeSets
	httpPort, httpsPort := acmeListeners(t, &sets)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})
	const domain = "two.example.com"
	stack := fmt.Sprintf("stack \"two\" {\n  service %q {\n    timeout = 60\n    acme = true\n  }\n}\n", domain)

	var agents []*Agent
	for k, name := range []string{"server-a", "server-b"} {
		body := ""
		if k == 0 { // the proxy whose set the stand-in listeners answer from
			body = fmt.Sprintf("proxy {\n  enabled = true\n  http_addr = \"127.0.0.1:%d\"\n}\n", freePort(t))
		}
		cfg := testConfig(t, consul.HTTPAddr, body)
		cfg.NodeName = name
		cfg.Proxy.Servers = []string{fmt.Sprintf("127.0.0.1:%d", cfg.Ports.GRPC)}
		cfg.Server.ACME = &config.ACME{DirectoryURL: pebble.DirectoryURL, CAFile: pebble.CAFile,
			Challenge: "http-01", RenewBefore: config.DefaultACMERenewBefore}
		if err := os.WriteFile(filepath.Join(cfg.Server.StacksDir, "two.hcl"), []byte(stack), 0o644); err != nil {
			t.Fatal(err)
		}
		a, _ := startACMEAgent(t, cfg, name)
		agents = append(agents, a)
	}
	sets.set(agents[0].proxy.Certificates())
	for _, a := range agents {
		waitFor(t, "the certificate in "+a.cfg.NodeName+"'s store", 90*time.Second, func() bool {
			_, src, ok := a.server.Certificates().Effective(domain)
			return ok && src == "acme"
		})
	}
	ca, _, _ := agents[0].server.Certificates().Effective(domain)
	cb, _, _ := agents[1].server.Certificates().Effective(domain)
	if !bytes.Equal(ca.CertPEM, cb.CertPEM) {
		t.Fatal("the servers hold different certificates")
	}
	time.Sleep(3 * time.Second) // a second order would have been placed by now
	if n := pebble.Issued(); n != 1 {
		t.Fatalf("pebble issued %d certificates for two servers, want 1", n)
	}
}
