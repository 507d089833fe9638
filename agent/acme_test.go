package agent

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
// Pebble's validation authority connects to the proxy's own HTTP listener (HTTP-01) or HTTPS
// listener (TLS-ALPN-01), on free ports in place of 80 and 443.
func TestACMEThroughProxy(t *testing.T) {
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) { testACMEThroughProxy(t, challenge) })
	}
}

func testACMEThroughProxy(t *testing.T, challenge string) {
	consul := consultest.Start(t)
	httpPort, httpsPort := freePort(t), freePort(t)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})

	cfg := testConfig(t, consul.HTTPAddr, fmt.Sprintf(
		"proxy {\n  enabled = true\n  http_addr = \"127.0.0.1:%d\"\n  https_addr = \"127.0.0.1:%d\"\n}\n", httpPort, httpsPort))
	cfg.Proxy.Servers = []string{fmt.Sprintf("127.0.0.1:%d", cfg.Ports.GRPC)} // this agent's own server
	cfg.Server.ACME = &config.ACME{Email: "ops@example.com", DirectoryURL: pebble.DirectoryURL, CAFile: pebble.CAFile,
		Challenge: challenge, RenewBefore: config.DefaultACMERenewBefore}
	const domain = "shop.example.com"
	stack := fmt.Sprintf("stack \"shop\" {\n  service %q {\n    timeout = 60\n    acme = true\n  }\n}\n", domain)
	if err := os.WriteFile(filepath.Join(cfg.Server.StacksDir, "shop.hcl"), []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	a, stop := runTestAgent(t, cfg, "first")
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
	// curl trusting only Pebble's root completes the handshake with the proxy (the service has
	// no replica: the proxy's own error page answers, over verified TLS).
	root := filepath.Join(t.TempDir(), "pebble-root.pem")
	if err := os.WriteFile(root, pebble.RootPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}",
		"--cacert", root, "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", domain, httpsPort),
		fmt.Sprintf("https://%s:%d/", domain, httpsPort)).CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), " 0") {
		t.Fatalf("curl over HTTPS with Pebble's root: %v: %s", err, out)
	}
	t.Logf("curl: HTTP status and TLS verify result %s", out)
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
	b, _ := runTestAgent(t, cfg, "restarted")
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

// TestACMETwoServersOneOrder: two server agents with the same stacks against one Consul and one
// Pebble both want the certificate; one order is placed, and both servers' certificate stores
// (what their proxies receive) hold the same certificate.
func TestACMETwoServersOneOrder(t *testing.T) {
	consul := consultest.Start(t)
	httpPort, httpsPort := freePort(t), freePort(t)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})
	const domain = "two.example.com"
	stack := fmt.Sprintf("stack \"two\" {\n  service %q {\n    timeout = 60\n    acme = true\n  }\n}\n", domain)

	var agents []*Agent
	for k, name := range []string{"server-a", "server-b"} {
		body := ""
		if k == 0 { // the proxy Pebble validates through
			body = fmt.Sprintf("proxy {\n  enabled = true\n  http_addr = \"127.0.0.1:%d\"\n  https_addr = \"127.0.0.1:%d\"\n}\n", httpPort, httpsPort)
		}
		cfg := testConfig(t, consul.HTTPAddr, body)
		cfg.NodeName = name
		cfg.Proxy.Servers = []string{fmt.Sprintf("127.0.0.1:%d", cfg.Ports.GRPC)}
		cfg.Server.ACME = &config.ACME{DirectoryURL: pebble.DirectoryURL, CAFile: pebble.CAFile,
			Challenge: "http-01", RenewBefore: config.DefaultACMERenewBefore}
		if err := os.WriteFile(filepath.Join(cfg.Server.StacksDir, "two.hcl"), []byte(stack), 0o644); err != nil {
			t.Fatal(err)
		}
		a, _ := runTestAgent(t, cfg, name)
		agents = append(agents, a)
	}
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
