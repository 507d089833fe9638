// Package pebbletest runs a real ACME server for tests: Pebble (github.com/letsencrypt/pebble/v2,
// Let's Encrypt's test CA), built from the module cache at the version go.mod pins, with a tiny
// DNS server that resolves every name to 127.0.0.1 so that Pebble validates challenges against
// listeners of the test. There is no fake: without the Go toolchain to build Pebble the test
// fails.
package pebbletest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Version is the Pebble release go.mod pins (tool directive).
const Version = "v2.10.3"

// Options configure a Pebble.
type Options struct {
	// HTTPPort and TLSPort are where Pebble's validation authority sends HTTP-01 and
	// TLS-ALPN-01 requests (127.0.0.1, through the test DNS server).
	HTTPPort, TLSPort int
	// ValidityPeriod is the lifetime of issued certificates (default 90 days).
	ValidityPeriod time.Duration
}

// Pebble is a running ACME server.
type Pebble struct {
	// DirectoryURL is the ACME directory.
	DirectoryURL string
	// CAFile trusts the directory's HTTPS certificate (Pebble's test "minica" root).
	CAFile string
	// MgmtURL is the management interface (issuing roots at /roots/0).
	MgmtURL string

	cmd  *exec.Cmd
	out  *syncBuffer
	dns  *dns.Server
	pool *x509.CertPool
}

var buildMu sync.Mutex

// Binary returns Pebble's binary: $NULLNET_PEBBLE_BIN, or one built once per machine into
// ~/.cache/nullnet/pebble-<version>/pebble from the module cache.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NULLNET_PEBBLE_BIN"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "nullnet", "pebble-"+Version)
	bin := filepath.Join(dir, "pebble")
	buildMu.Lock()
	defer buildMu.Unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "github.com/letsencrypt/pebble/v2/cmd/pebble")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pebbletest: building pebble %s (go build github.com/letsencrypt/pebble/v2/cmd/pebble): %v\n%s", Version, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil { // atomic: concurrent builders both succeed
		t.Fatal(err)
	}
	return bin
}

// moduleDir is Pebble's module directory (for its test certificates).
func moduleDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("pebbletest: locating the pebble module (go mod download github.com/letsencrypt/pebble/v2): %v", err)
	}
	return strings.TrimSpace(string(out))
}

// Start runs Pebble and its DNS server; both are stopped at the end of the test.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	bin := Binary(t)
	mod := moduleDir(t)
	if o.ValidityPeriod == 0 {
		o.ValidityPeriod = 90 * 24 * time.Hour
	}
	p := &Pebble{CAFile: filepath.Join(mod, "test/certs/pebble.minica.pem"), out: &syncBuffer{}}
	ca, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AppendCertsFromPEM(ca)

	p.dns = startDNS(t)
	t.Cleanup(func() { _ = p.dns.Shutdown() })

	ports := freeTCPPorts(t, 2)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"certificate":                    filepath.Join(mod, "test/certs/localhost/cert.pem"),
		"privateKey":                     filepath.Join(mod, "test/certs/localhost/key.pem"),
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "test", "validityPeriod": int(o.ValidityPeriod / time.Second)}},
	}}
	raw, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-config", cfgPath, "-strict", "-dnsserver", p.dns.Listener.Addr().String())
	p.cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("pebbletest: start: %v", err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() || os.Getenv("NULLNET_PEBBLE_LOG") != "" {
			t.Logf("pebble output:\n%s", p.out.String())
		}
	})
	p.DirectoryURL = fmt.Sprintf("https://localhost:%d/dir", ports[0])
	p.MgmtURL = fmt.Sprintf("https://localhost:%d", ports[1])
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := p.Client().Get(p.DirectoryURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebbletest: directory not ready: %v\n%s", err, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// Client is an HTTP client trusting Pebble's own HTTPS certificate.
func (p *Pebble) Client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool}}}
}

// RootPEM returns Pebble's issuing root in PEM (certificates it issues chain to it).
func (p *Pebble) RootPEM(t testing.TB) []byte {
	t.Helper()
	resp, err := p.Client().Get(p.MgmtURL + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pem, _ := io.ReadAll(resp.Body)
	return pem
}

// Roots returns the pool of Pebble's issuing root.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	pem := p.RootPEM(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("pebbletest: no root at /roots/0: %s", pem)
	}
	return pool
}

// Issued counts the certificates Pebble has issued (from its log).
func (p *Pebble) Issued() int {
	return strings.Count(p.out.String(), "Issued certificate serial")
}

// Output is Pebble's log so far.
func (p *Pebble) Output() string { return p.out.String() }

// startDNS answers A queries for every name with 127.0.0.1 and AAAA with nothing, on a free TCP
// port (Pebble's validation authority queries its -dnsserver over TCP).
func startDNS(t testing.TB) *dns.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IPv4(127, 0, 0, 1)})
			}
		}
		_ = w.WriteMsg(m)
	})
	started := make(chan struct{})
	s := &dns.Server{Listener: l, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = s.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("pebbletest: dns server did not start")
	}
	return s
}

func freeTCPPorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
