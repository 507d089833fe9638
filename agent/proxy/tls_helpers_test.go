package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// selfSigned is an ECDSA P-256 certificate for name, signed by itself.
func selfSigned(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsBackend is a service that terminates TLS with its own certificate for name. For every
// connection it records what the client's ClientHello asked for, answers one line naming
// itself, the SNI and the ALPN protocol it saw, echoes one line and closes.
type tlsBackend struct {
	name string
	ln   net.Listener
	mu   sync.Mutex
	seen []string // "sni=… alpn=…" per handshake
}

func startTLSBackend(t testing.TB, name string) *tlsBackend {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t, name)}, NextProtos: []string{"nullnet-test", "http/1.1"}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBackend{name: name, ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c.(*tls.Conn))
		}
	}()
	return b
}

func (b *tlsBackend) serve(c *tls.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	st := c.ConnectionState()
	b.mu.Lock()
	b.seen = append(b.seen, fmt.Sprintf("sni=%s alpn=%s", st.ServerName, st.NegotiatedProtocol))
	b.mu.Unlock()
	fmt.Fprintf(c, "backend=%s sni=%s alpn=%s\n", b.name, st.ServerName, st.NegotiatedProtocol)
	// One line echoed, then close: s_client -ign_eof ends when the server closes.
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if line, _ := bufio.NewReader(c).ReadString('\n'); line != "" {
		_, _ = c.Write([]byte("echo " + line))
	}
}

func (b *tlsBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

func (b *tlsBackend) handshakes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

// sClient runs `openssl s_client` against 127.0.0.1:port with the given server name and ALPN
// list, sends input, and returns everything it printed. A missing openssl is a failure.
func sClient(t testing.TB, port uint16, serverName, alpn, input string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl is required (scripts/setup installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port), "-ign_eof", "-showcerts"}
	if serverName != "" {
		args = append(args, "-servername", serverName)
	} else {
		args = append(args, "-noservername")
	}
	if alpn != "" {
		args = append(args, "-alpn", alpn)
	}
	cmd := exec.CommandContext(ctx, "openssl", args...)
	cmd.Stdin = strings.NewReader(input)
	out, _ := cmd.CombinedOutput() // a refused handshake exits non-zero: the output says why
	if ctx.Err() != nil {
		t.Fatalf("openssl s_client -servername %s did not finish within 30s:\n%s", serverName, out)
	}
	return string(out)
}

// subjectCN returns the CN of the leaf certificate s_client printed ("" if none).
func subjectCN(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "subject="); ok {
			rest = strings.ReplaceAll(rest, " ", "")
			if _, cn, ok := strings.Cut(rest, "CN="); ok {
				cn, _, _ = strings.Cut(cn, ",")
				return cn
			}
		}
	}
	return ""
}

// inmemMetrics routes go-metrics to an in-memory sink for the test.
func inmemMetrics(t testing.TB) *metrics.InmemSink {
	t.Helper()
	sink := metrics.NewInmemSink(time.Hour, time.Hour)
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics = false, false
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = metrics.NewGlobal(metrics.DefaultConfig(""), &metrics.BlackholeSink{}) })
	return sink
}

// counterSum adds every counter named name whose labels include all of want ("k=v").
func counterSum(sink *metrics.InmemSink, name string, want ...string) float64 {
	var total float64
	for _, iv := range sink.Data() {
		iv.RLock()
		for _, c := range iv.Counters {
			if c.Name != name {
				continue
			}
			ok := true
			for _, w := range want {
				k, v, _ := strings.Cut(w, "=")
				found := false
				for _, l := range c.Labels {
					if l.Name == k && l.Value == v {
						found = true
					}
				}
				ok = ok && found
			}
			if ok {
				total += c.Sum
			}
		}
		iv.RUnlock()
	}
	return total
}
