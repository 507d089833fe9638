// Package tlsload generates the HTTPS figures' load: full TLS 1.3 handshakes (no resumption, the
// cost a terminating proxy pays for every new client) and small requests on kept-alive HTTPS
// connections. Every relay is driven by the same client code, so their ratios compare the
// relays, not the clients.
package tlsload

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one load run measured.
type Result struct {
	Ops      int64 // completed handshakes or requests
	Errors   int64
	Elapsed  time.Duration
	P50, P99 time.Duration
}

// Rate is completed operations per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// clientConfig: TLS 1.3 with X25519 and no session cache, so every connection is a full
// handshake; the chain is not verified (the relays present the same certificate, and the
// figure is the server's cost, not the client's).
func clientConfig(serverName string, alpn []string) *tls.Config {
	return &tls.Config{
		ServerName:         serverName,
		InsecureSkipVerify: true, //nolint:gosec // load generator; see above
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519},
		NextProtos:         alpn,
	}
}

// Handshakes opens connections to addr from `workers` goroutines for d, each completing a full
// TLS 1.3 handshake for serverName and closing.
func Handshakes(ctx context.Context, addr, serverName string, workers int, d time.Duration) Result {
	return run(ctx, workers, d, func(dialer *net.Dialer) (int, error) {
		c, err := dialer.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(c, clientConfig(serverName, []string{"http/1.1"}))
		if err := tc.Handshake(); err != nil {
			return 0, err
		}
		return 1, nil
	})
}

// KeepAliveRequests keeps `conns` HTTPS/1.1 connections to addr and sends GET / for host on each,
// one request at a time, for d. A connection that fails is re-opened.
func KeepAliveRequests(ctx context.Context, addr, host string, conns int, d time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: nullnet-bench\r\n\r\n")
	return run(ctx, conns, d, func(dialer *net.Dialer) (int, error) {
		c, err := dialer.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		tc := tls.Client(c, clientConfig(host, []string{"http/1.1"}))
		br := bufio.NewReader(tc)
		n := 0
		for ctx.Err() == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := tc.Write(req); err != nil {
				return n, err
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return n, err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				return n, fmt.Errorf("status %d: %v", resp.StatusCode, err)
			}
			n++
		}
		return n, nil
	})
}

// run calls op in a loop from n goroutines until d passes; op returns the operations it
// completed (a kept-alive connection completes many, and its latency sample is per call).
func run(ctx context.Context, n int, d time.Duration, op func(*net.Dialer) (int, error)) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ops, errs atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dialer := &net.Dialer{Timeout: 5 * time.Second}
			samples := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				k, err := op(dialer)
				ops.Add(int64(k))
				if k > 0 {
					samples = append(samples, time.Since(t0)/time.Duration(k))
				}
				if err != nil && ctx.Err() == nil {
					errs.Add(1)
				}
			}
			mu.Lock()
			all = append(all, samples...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	r := Result{Ops: ops.Load(), Errors: errs.Load(), Elapsed: time.Since(start)}
	r.P50, r.P99 = quantile(all, 0.5), quantile(all, 0.99)
	return r
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := max(0, min(int(q*float64(len(sorted))+0.5)-1, len(sorted)-1))
	return sorted[i]
}

// Certificate is an ECDSA P-256 certificate written as PEM files for the relays under test.
type Certificate struct {
	Name     string
	CertFile string // the certificate (self-signed leaf)
	KeyFile  string
	// Combined is certificate then key in one file, as HAProxy's `crt` wants it.
	Combined string
}

// WriteCertificate creates a self-signed ECDSA P-256 certificate for name under dir.
func WriteCertificate(dir, name string) (Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Certificate{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	c := Certificate{Name: name, CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key"),
		Combined: filepath.Join(dir, name+".pem")}
	for path, data := range map[string][]byte{c.CertFile: certPEM, c.KeyFile: keyPEM, c.Combined: append(slices.Clone(certPEM), keyPEM...)} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return Certificate{}, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return c, nil
}

// Backend is a plain HTTP/1.1 server answering every request with a small body, behind the
// terminating relays.
type Backend struct {
	srv *http.Server
	ln  net.Listener
}

// BodySize is the response body of every request ("small responses").
const BodySize = 64

// StartBackend listens on addr (":0" for any free port on all addresses).
func StartBackend(addr string) (*Backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	body := make([]byte, BodySize)
	for i := range body {
		body[i] = 'x'
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &Backend{srv: srv, ln: ln}, nil
}

// Addr is the backend's listening address.
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// Close stops the backend.
func (b *Backend) Close() error { return b.srv.Close() }
