package certs

import (
	"bytes"
	"crypto/tls"
	"strings"

	pb "github.com/nullnet/nullnet/proto"
)

// Problem is a bundle entry that could not be used; the rest of the bundle is.
type Problem struct {
	Kind   string // "certificate" or "tls_alpn_challenge"
	Domain string
	Reason string
}

type parsed struct {
	certPEM, keyPEM []byte
	cert            *tls.Certificate // nil when the pair did not parse
	reason          string
}

// Parser turns WatchCertificates bundles into Snapshots. A pair whose bytes did not change since
// the previous bundle is not parsed again (a bundle is resent whole on every change, ACME
// challenges included, and parsing thousands of keys each time would cost seconds of CPU), and a
// bad pair is reported once, not with every bundle. Not safe for concurrent use.
type Parser struct {
	certs map[string]parsed
	alpn  map[string]parsed
}

// NewParser returns an empty Parser.
func NewParser() *Parser { return &Parser{certs: map[string]parsed{}, alpn: map[string]parsed{}} }

// Parse builds the snapshot of b and returns the entries that failed for the first time. A bad
// entry is left out; it never affects the others.
func (p *Parser) Parse(b *pb.CertificateBundle) (*Snapshot, []Problem) {
	s := &Snapshot{Version: b.GetVersion(), ByName: map[string]*tls.Certificate{},
		HTTPChallenges: map[string]string{}, TLSALPNChallenges: map[string]*tls.Certificate{}}
	var problems []Problem
	nextCerts := make(map[string]parsed, len(b.GetCertificates()))
	for _, c := range b.GetCertificates() {
		d := normalize(c.GetDomain())
		if _, dup := nextCerts[d]; dup || d == "" {
			continue
		}
		e, fresh := reuseOrParse(p.certs[d], c.GetCertPem(), c.GetKeyPem())
		nextCerts[d] = e
		if e.cert != nil {
			s.ByName[d] = e.cert
		} else if fresh {
			problems = append(problems, Problem{Kind: "certificate", Domain: d, Reason: e.reason})
		}
	}
	nextALPN := make(map[string]parsed, len(b.GetTlsAlpnChallenges()))
	for _, c := range b.GetTlsAlpnChallenges() {
		d := normalize(c.GetDomain())
		if _, dup := nextALPN[d]; dup || d == "" {
			continue
		}
		e, fresh := reuseOrParse(p.alpn[d], c.GetCertPem(), c.GetKeyPem())
		nextALPN[d] = e
		if e.cert != nil {
			s.TLSALPNChallenges[d] = e.cert
		} else if fresh {
			problems = append(problems, Problem{Kind: "tls_alpn_challenge", Domain: d, Reason: e.reason})
		}
	}
	for _, c := range b.GetHttpChallenges() {
		if t := c.GetToken(); t != "" {
			s.HTTPChallenges[t] = c.GetKeyAuthorization()
		}
	}
	p.certs, p.alpn = nextCerts, nextALPN
	return s, problems
}

// reuseOrParse returns prev when its bytes are the same, else the newly parsed pair (fresh).
func reuseOrParse(prev parsed, certPEM, keyPEM []byte) (parsed, bool) {
	if prev.certPEM != nil && bytes.Equal(prev.certPEM, certPEM) && bytes.Equal(prev.keyPEM, keyPEM) {
		return prev, false
	}
	e := parsed{certPEM: certPEM, keyPEM: keyPEM}
	if len(certPEM) == 0 {
		// Keep a non-nil slice so that an empty entry is remembered (and reported once).
		e.certPEM = []byte{}
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		e.reason = err.Error()
		return e, true
	}
	e.cert = &c
	return e, true
}

func normalize(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }
