package acme

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/acme"
)

// KV layout under Config.Prefix (default "nullnet/acme/"). This file is the only place that
// builds these keys.
//
//	accounts/<id>                    account key + registration, one per directory URL
//	certs/<domain>                   certificate chain + key + metadata (certRecord)
//	failures/<domain>                failed orders in a row and the next attempt (failureRecord)
//	challenges/http-01/<token>       key authorization, while an order is pending
//	challenges/tls-alpn-01/<domain>  challenge certificate + key, while an order is pending
//	lock                             the Consul lock held while ordering
const (
	accountsDir   = "accounts/"
	certsDir      = "certs/"
	failuresDir   = "failures/"
	httpChalDir   = "challenges/http-01/"
	tlsALPNChalDr = "challenges/tls-alpn-01/"
	lockKey       = "lock"
)

// accountID names the account record of a directory: accounts are per CA.
func accountID(directoryURL string) string {
	sum := sha256.Sum256([]byte(directoryURL))
	return hex.EncodeToString(sum[:8])
}

// accountRecord is the ACME account stored in KV.
type accountRecord struct {
	Email        string                `json:"email"`
	DirectoryURL string                `json:"directory_url"`
	KeyPEM       string                `json:"key_pem"`
	Registration *acme.ExtendedAccount `json:"registration"`
}

// certRecord is one domain's certificate stored in KV.
type certRecord struct {
	Domain       string    `json:"domain"`
	CertPEM      string    `json:"cert_pem"` // leaf first, then the issuer chain
	KeyPEM       string    `json:"key_pem"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	IssuedAt     time.Time `json:"issued_at"`
	DirectoryURL string    `json:"directory_url"`
	CertURL      string    `json:"cert_url,omitempty"`
}

// failureRecord is a domain's backoff, shared by all servers and kept across restarts: a CA
// limits failed validations (Let's Encrypt: 5 per hour per name), so neither a second server
// nor a restart may start the count again.
type failureRecord struct {
	Failures    int       `json:"failures"`
	NextAttempt time.Time `json:"next_attempt"`
	Reason      string    `json:"reason"`
}

// tlsALPNRecord is a pending TLS-ALPN-01 challenge certificate.
type tlsALPNRecord struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// maxRecord bounds what we decode from KV (Consul's own value limit is 512 KiB).
const maxRecord = 512 << 10

// decodeCert parses and checks a stored certificate: the key must match the leaf and the leaf
// must cover the domain. A record that fails is ignored (and re-issued when due), never served.
func decodeCert(domain string, raw []byte) (*certRecord, error) {
	if len(raw) > maxRecord {
		return nil, fmt.Errorf("record of %d bytes is too large", len(raw))
	}
	var r certRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if r.Domain != domain {
		return nil, fmt.Errorf("record names %q, key names %q", r.Domain, domain)
	}
	pair, err := tls.X509KeyPair([]byte(r.CertPEM), []byte(r.KeyPEM))
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("leaf: %w", err)
		}
	}
	if err := leaf.VerifyHostname(domain); err != nil {
		return nil, fmt.Errorf("leaf does not cover the domain: %w", err)
	}
	r.NotBefore, r.NotAfter = leaf.NotBefore, leaf.NotAfter // trust the certificate over the metadata
	return &r, nil
}

// renewalDue reports whether a domain needs an order now: no usable certificate, one from
// another directory (the operator moved from staging to production), or one past renewAt.
func renewalDue(r *certRecord, directoryURL string, now time.Time, renewBefore time.Duration) bool {
	if r == nil || r.DirectoryURL != directoryURL {
		return true
	}
	return !now.Before(renewAt(r, renewBefore))
}

// renewAt is when a certificate is renewed: renewBefore ahead of expiry, but never earlier than
// two thirds into its lifetime, so that a CA issuing certificates shorter than the window (six-day
// certificates against a 30-day window) does not make us order again in a loop.
func renewAt(r *certRecord, renewBefore time.Duration) time.Time {
	if life := r.NotAfter.Sub(r.NotBefore); life > 0 && renewBefore > life/3 {
		renewBefore = life / 3
	}
	return r.NotAfter.Add(-renewBefore)
}

// validDomain rejects names that cannot be a key below certs/ or a certificate identifier.
func validDomain(d string) error {
	if d == "" || len(d) > 253 {
		return errors.New("empty or longer than 253 characters")
	}
	if strings.ContainsAny(d, "/ *") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return errors.New("not a host name")
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return errors.New("empty or over-long label")
		}
		for _, c := range l {
			ok := c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z'
			if !ok {
				return fmt.Errorf("character %q is not allowed (lower-case host names only)", c)
			}
		}
	}
	return nil
}
