package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// HTTPS at the edge: the edge proxy terminates TLS on :443 (inside its namespace) with a
// certificate the operator dropped into the control server's certs_dir; the server streams it to
// the proxy over the mutual-TLS gRPC channel, and requests cross the VXLAN overlay as on :80.

func (c *cluster) certsDir() string   { return filepath.Join(c.dir, "certs") }
func (c *cluster) webCAFile() string  { return filepath.Join(c.dir, "web-ca.pem") }
func (c *cluster) webCertDir() string { return filepath.Join(c.certsDir(), webHost) }
func webURL(path string) string       { return "https://" + webHost + path }
func resolveEdge() string             { return webHost + ":443:" + hostEdge.ip }

// webPKI is a public-facing CA of its own (not the cluster's mutual-TLS CA): its leaf for
// webHost is what browsers would see. Each call issues a new leaf with a new serial.
type webPKI struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

func newWebPKI() (*webPKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nullnet e2e web CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &webPKI{ca: ca, caKey: key}, nil
}

// issue writes fullchain.pem and privkey.pem for name into dir (privkey first, so a watcher
// that sees the chain change finds the matching key).
func (p *webPKI) issue(dir, name string, serial int64) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw})...)
	if err := writeAtomic(filepath.Join(dir, "privkey.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, "fullchain.pem"), chain, 0o644)
}

func (p *webPKI) writeCA(path string) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw}), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// makeWebCerts runs before the agents start: the CA file the clients trust and the first leaf.
func (c *cluster) makeWebCerts() error {
	p, err := newWebPKI()
	if err != nil {
		return err
	}
	c.web = p
	if err := p.writeCA(c.webCAFile()); err != nil {
		return err
	}
	return p.issue(c.webCertDir(), webHost, 100)
}

// servedSerial is the serial of the certificate the edge presents for name, read with
// openssl s_client from the outside host.
func servedSerial(name string) (string, error) {
	script := fmt.Sprintf("openssl s_client -connect %s:443 -servername %s </dev/null 2>/dev/null | openssl x509 -noout -serial",
		hostEdge.ip, name)
	out, err := outside("sh", "-c", script)
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "serial=")), nil
}

// 12: HTTPS through the edge over the overlay: the certificate from certs_dir, HTTP/2, an
// unknown name refused with a TLS alert, and a replaced certificate served without a restart
// while a long download on the old one completes.
func testHTTPS(t *testing.T, c *cluster) {
	curl := func(extra ...string) (string, error) {
		argv := append([]string{"curl", "-sS", "--max-time", "10", "--cacert", c.webCAFile(), "--resolve", resolveEdge()}, extra...)
		return outside(argv...)
	}
	if err := poll(settle, func() error {
		out, err := curl(webURL("/"))
		if err == nil && !strings.Contains(out, "hello from node") {
			err = fmt.Errorf("body %q", truncate(out, 200))
		}
		return err
	}); err != nil {
		t.Fatalf("curl %s (verified against the web CA): %v", webURL("/"), err)
	}
	if out, err := curl("--http2", "-o", "/dev/null", "-w", "%{http_version}", webURL("/")); err != nil || strings.TrimSpace(out) != "2" {
		t.Errorf("HTTP/2 over TLS: http_version %q, %v; want 2", out, err)
	}
	out, _ := outside("sh", "-c", fmt.Sprintf("openssl s_client -connect %s:443 -servername nobody.e2e.test </dev/null 2>&1", hostEdge.ip))
	if !strings.Contains(strings.ToLower(out), "unrecognized name") {
		t.Errorf("unknown SNI: want a TLS alert unrecognized_name, openssl said:\n%s", truncate(out, 1500))
	}

	// Rotation under load: a long HTTPS download runs while a new leaf (serial 101) replaces
	// the old one; it completes intact on the certificate it started with, new handshakes
	// present the new one soon after, and no agent restarts.
	sum, err := c.writeBigFile()
	if err != nil {
		t.Fatal(err)
	}
	done := download(hostOut.ns, "--cacert", c.webCAFile(), "--resolve", resolveEdge(), webURL("/"+bigFile))
	time.Sleep(time.Second)
	pids := c.agentPIDs()
	if err := c.web.issue(c.webCertDir(), webHost, 101); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := poll(30*time.Second, func() error {
		s, err := servedSerial(webHost)
		if err == nil && s != "65" { // 101 in hex, as openssl prints it
			err = fmt.Errorf("serial %q", s)
		}
		return err
	}); err != nil {
		t.Fatalf("replaced certificate never served: %v", err)
	}
	t.Logf("replaced certificate served after %v (server watch + stream to the proxy)", time.Since(start).Round(10*time.Millisecond))
	if out, err := curl(webURL("/")); err != nil || !strings.Contains(out, "hello from node") {
		t.Errorf("after rotation: %q, %v", truncate(out, 200), err)
	}
	select {
	case got := <-done:
		t.Errorf("the HTTPS download ended before the rotation was served (%s): make it longer", got)
	default:
		if got := <-done; got != sum {
			t.Errorf("HTTPS download across the rotation: sha256 %s, want %s", got, sum)
		}
	}
	if after := c.agentPIDs(); fmt.Sprint(after) != fmt.Sprint(pids) {
		t.Errorf("agents restarted during rotation: %v -> %v", pids, after)
	}
}
