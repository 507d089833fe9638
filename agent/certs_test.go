package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
	"github.com/nullnet/nullnet/agent/tlsutil"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// runTestAgent runs a built agent until stop (or the end of the test); its logs are shown when
// the test fails.
func runTestAgent(t *testing.T, cfg *config.Config, name string) (*Agent, func()) {
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

// TestCertificatesDirToProxy: a server agent and a proxy agent, both behind mutual TLS against
// a real Consul. Certificate files written into the server's certs_dir reach the proxy's
// certificate set over WatchCertificates within a second; a broken replacement keeps the good
// certificate and emits tls_certificate_invalid; a removal removes it. A node certificate without
// the proxy role is refused the stream (it carries private keys).
func TestCertificatesDirToProxy(t *testing.T) {
	consul := consultest.Start(t)
	pki := newTestPKI(t)
	certsDir := t.TempDir()

	sCert, sKey := pki.issue(t, tlsutil.RoleServer, "agent-test")
	scfg := testConfig(t, consul.HTTPAddr, pki.tlsBlock(sCert, sKey))
	scfg.Server.CertsDir = certsDir
	server, _ := runTestAgent(t, scfg, "server")

	pCert, pKey := pki.issue(t, tlsutil.RoleProxy, "proxy-test")
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", scfg.Ports.GRPC)
	pcfg := testConfig(t, consul.HTTPAddr, pki.tlsBlock(pCert, pKey)+fmt.Sprintf(
		"proxy {\n  enabled = true\n  servers = [%q]\n  http_addr = \"127.0.0.1:%d\"\n  https_addr = \"127.0.0.1:0\"\n}\n", grpcAddr, freePort(t)))
	pcfg.NodeName = "proxy-test"
	pcfg.Server.Enabled = false
	proxyAgent, _ := runTestAgent(t, pcfg, "proxy")
	set := proxyAgent.proxy.Certificates()

	waitFor(t, "the first certificate bundle", 10*time.Second, func() bool { return set.Current().Version > 0 })

	// served returns the chain the proxy would present for name (nil = none).
	served := func(name string) []byte {
		c, ok := set.Current().Lookup(name)
		if !ok {
			return nil
		}
		return c.Certificate[0]
	}
	leafDER := func(chainPEM []byte) []byte {
		c, err := tls.X509KeyPair(chainPEM, keyOf[string(chainPEM)])
		if err != nil {
			t.Fatal(err)
		}
		return c.Certificate[0]
	}
	// within waits for cond and reports how long it took, failing after limit.
	within := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > limit {
				t.Fatalf("%s: not within %s", what, limit)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		t.Logf("%s: %s", what, took.Round(time.Millisecond))
		return took
	}

	ca := certstoretest.NewCA(t)
	issue := func(days int, names ...string) []byte {
		c, k := ca.Valid(t, days, names...)
		keyOf[string(c)] = k
		return c
	}
	const domain = "shop.example.com"
	cert1 := issue(90, domain)
	certstoretest.WritePair(t, certsDir, domain, cert1, keyOf[string(cert1)])
	within("new pair served by the proxy", time.Second, func() bool { return bytes.Equal(served(domain), leafDER(cert1)) })

	// A real client (openssl s_client) against a TLS listener that takes its certificates from
	// the proxy's set, as the HTTPS listener does.
	tlsAddr := serveFromSet(t, set)
	if got := opensslLeaf(t, tlsAddr, domain); !bytes.Equal(got, leafDER(cert1)) {
		t.Fatal("openssl was not shown the installed certificate")
	}

	cert2 := issue(60, domain)
	certstoretest.WritePair(t, certsDir, domain, cert2, keyOf[string(cert2)])
	within("replaced pair served by the proxy", time.Second, func() bool { return bytes.Equal(served(domain), leafDER(cert2)) })
	if got := opensslLeaf(t, tlsAddr, domain); !bytes.Equal(got, leafDER(cert2)) {
		t.Fatal("openssl was not shown the replaced certificate")
	}

	wild := issue(90, "*.example.com")
	certstoretest.WritePair(t, certsDir, "_wildcard.example.com", wild, keyOf[string(wild)])
	within("wildcard served", time.Second, func() bool { return bytes.Equal(served("other.example.com"), leafDER(wild)) })
	if !bytes.Equal(served(domain), leafDER(cert2)) {
		t.Fatal("the exact certificate no longer wins over the wildcard")
	}

	// Broken replacements: each is rejected with an event, and cert2 stays in service.
	_, otherKey := ca.Valid(t, 60, domain)
	expired, expiredKey := ca.Issue(t, []string{domain}, time.Now().Add(-72*time.Hour), time.Now().Add(-time.Hour))
	wrongName := issue(60, "shop.example.org")
	for _, bad := range []struct {
		name      string
		cert, key []byte
		reason    string
	}{
		{"mismatched key", cert2, otherKey, "does not match"},
		{"expired", expired, expiredKey, "expired"},
		{"wrong name", wrongName, keyOf[string(wrongName)], "does not cover " + domain},
	} {
		after := server.events.Index()
		certstoretest.WritePair(t, certsDir, domain, bad.cert, bad.key)
		within("tls_certificate_invalid for "+bad.name, 5*time.Second, func() bool {
			evs, _ := server.events.Since(after)
			return hasEvent(evs, events.TLSCertificateInvalid, domain, bad.reason)
		})
		time.Sleep(200 * time.Millisecond) // what the proxy would have received by now
		if !bytes.Equal(served(domain), leafDER(cert2)) {
			t.Fatalf("%s: the proxy no longer serves the last good certificate", bad.name)
		}
	}

	if got := opensslLeaf(t, tlsAddr, domain); !bytes.Equal(got, leafDER(cert2)) {
		t.Fatal("after the broken replacements openssl was not shown the last good certificate")
	}

	after := server.events.Index()
	if err := os.RemoveAll(filepath.Join(certsDir, domain)); err != nil {
		t.Fatal(err)
	}
	// The wildcard covers the name once the exact certificate is gone.
	within("removed pair gone from the proxy", time.Second, func() bool { return bytes.Equal(served(domain), leafDER(wild)) })
	evs, _ := server.events.Since(after)
	if !hasEvent(evs, events.CertificateRemoved, domain, "") {
		t.Fatalf("no certificate_removed event: %+v", evs)
	}

	// A client node's certificate is refused the stream: it carries private keys.
	cCert, cKey := pki.issue(t, tlsutil.RoleClient, "client-test")
	ccfg := config.TLS{CAFile: pki.caFile(), CertFile: cCert, KeyFile: cKey, VerifyOutgoing: true, VerifyServerHostname: true}
	tc, err := tlsutil.ClientConfig(ccfg, "dc1")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := pb.NewIngressClient(conn).WatchCertificates(ctx, &pb.WatchCertificatesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "proxy role") {
		t.Fatalf("client certificate: %v, want PermissionDenied for the missing proxy role", err)
	}
}

// keyOf maps a test chain to its key.
var keyOf = map[string][]byte{}

func hasEvent(evs []events.Event, kind, domain, reason string) bool {
	for _, e := range evs {
		if e.Kind == kind && e.Fields["domain"] == domain && strings.Contains(e.Fields["reason"], reason) {
			return true
		}
	}
	return false
}

// serveFromSet is a TLS listener choosing its certificate from set by SNI (no certificate: the
// handshake fails), answering nothing after the handshake.
func serveFromSet(t *testing.T, set *certs.Set) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12,
		GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c, ok := set.Current().Lookup(hi.ServerName); ok {
				return c, nil
			}
			return nil, fmt.Errorf("no certificate for %q", hi.ServerName)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
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
	return ln.Addr().String()
}

// opensslLeaf runs `openssl s_client -servername name` and returns the DER of the leaf it was
// shown.
func opensslLeaf(t *testing.T, addr, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-servername", name).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	block, _ := pem.Decode(out[bytes.Index(out, []byte("-----BEGIN CERTIFICATE-----")):])
	if block == nil {
		t.Fatalf("openssl s_client showed no certificate:\n%s", out)
	}
	return block.Bytes
}
