// Package certs holds the TLS certificates a proxy serves, swapped in place as the servers
// stream new sets (WatchCertificates). Lookups are lock-free: a handshake reads one immutable
// snapshot, so a connection keeps the certificate it started with while new handshakes see the
// new one.
package certs

import (
	"crypto/tls"
	"strings"
	"sync/atomic"
)

// Snapshot is one immutable set of certificates and pending ACME challenges.
type Snapshot struct {
	Version uint64
	// ByName maps a lower-case domain ("example.com" or "*.example.com") to its certificate.
	ByName map[string]*tls.Certificate
	// HTTPChallenges maps an ACME HTTP-01 token to its key authorization.
	HTTPChallenges map[string]string
	// TLSALPNChallenges maps a lower-case domain to its ACME TLS-ALPN-01 certificate.
	TLSALPNChallenges map[string]*tls.Certificate
}

// Set is the current Snapshot. The zero value is an empty set, ready to use.
type Set struct {
	cur atomic.Pointer[Snapshot]
}

// Replace installs s as the current snapshot.
func (c *Set) Replace(s *Snapshot) { c.cur.Store(s) }

// Current returns the current snapshot (never nil).
func (c *Set) Current() *Snapshot {
	if s := c.cur.Load(); s != nil {
		return s
	}
	return &Snapshot{}
}

// Lookup finds the certificate for a TLS server name: the exact name first, then a wildcard
// covering exactly one more label ("a.example.com" matches "*.example.com", "a.b.example.com"
// does not), as RFC 6125 §6.4.3 allows.
func (s *Snapshot) Lookup(serverName string) (*tls.Certificate, bool) {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if name == "" {
		return nil, false
	}
	if c, ok := s.ByName[name]; ok {
		return c, true
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := s.ByName["*"+name[i:]]; ok {
			return c, true
		}
	}
	return nil, false
}
