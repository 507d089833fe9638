// Package testcert adapts certstoretest's throw-away CA to the HTTPS listener's tests: parsed
// tls.Certificates for a certs.Snapshot, a pool for Go clients and a CA file for curl and
// openssl.
package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
)

// CA is a test certificate authority.
type CA struct {
	base *certstoretest.CA
	PEM  []byte
	Pool *x509.CertPool
}

// NewCA makes a CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	c := certstoretest.NewCA(t)
	return &CA{base: c, PEM: c.CertPEM, Pool: c.Pool()}
}

// Issued is a leaf certificate (ECDSA P-256, valid for a day) with its PEM forms.
type Issued struct {
	TLS     *tls.Certificate
	CertPEM []byte // leaf then CA (a full chain)
	KeyPEM  []byte
}

// Issue signs a server certificate for names; the first is the subject's common name.
func (ca *CA) Issue(t testing.TB, names ...string) Issued {
	t.Helper()
	chain, key := ca.base.Valid(t, 1, names...)
	c, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	return Issued{TLS: &c, CertPEM: chain, KeyPEM: key}
}

// WriteCA writes the CA certificate to a file in dir and returns its path (curl --cacert).
func (ca *CA) WriteCA(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
