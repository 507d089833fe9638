// Package tlsterm terminates TLS for the proxy's HTTPS listener. NewConfig chooses each
// handshake's certificate by SNI from a certs.Set (exact name, then a one-label wildcard) and
// answers ACME TLS-ALPN-01 challenges; a name with no certificate fails the handshake with the
// alert unrecognized_name, never with another domain's certificate. Listener completes the
// handshake before the HTTP server sees a connection, so that every failure is classified by a
// bounded Reason and reported once, and a client that never finishes its hello costs a bounded
// slot for a bounded time.
package tlsterm

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"

	"github.com/nullnet/nullnet/agent/certs"
)

// ALPNACME is the ALPN protocol of ACME TLS-ALPN-01 validation (RFC 8737).
const ALPNACME = "acme-tls/1"

// Reason is why a handshake failed; the set is fixed (metric label values).
type Reason string

const (
	// ReasonUnknownName: the client asked for a name with no certificate.
	ReasonUnknownName Reason = "unknown_name"
	// ReasonNoSNI: the client sent no server name, so no certificate can be chosen.
	ReasonNoSNI Reason = "no_sni"
	// ReasonProtocol: no common version, cipher suite, group or ALPN protocol, a malformed
	// hello, or an alert from the client (it rejected the certificate).
	ReasonProtocol Reason = "protocol"
	// ReasonNotTLS: the client spoke something else (plain HTTP to the HTTPS port).
	ReasonNotTLS Reason = "not_tls"
	// ReasonTimeout: the handshake did not finish within the handshake timeout.
	ReasonTimeout Reason = "timeout"
	// ReasonClosed: the client closed or reset the connection before the handshake finished.
	ReasonClosed Reason = "closed"
	// ReasonOverload: too many handshakes were in progress; the connection was closed at once.
	ReasonOverload Reason = "overload"
	// ReasonOther: anything else (a local socket error).
	ReasonOther Reason = "other"
)

// Reasons lists every Reason, in a fixed order.
var Reasons = []Reason{ReasonUnknownName, ReasonNoSNI, ReasonProtocol, ReasonNotTLS, ReasonTimeout,
	ReasonClosed, ReasonOverload, ReasonOther}

// Index returns r's position in Reasons (for counter arrays); ReasonOther's for an unknown r.
func (r Reason) Index() int {
	if i := slices.Index(Reasons, r); i >= 0 {
		return i
	}
	return len(Reasons) - 1
}

// note carries what the certificate callback learned back to the Listener that classifies the
// handshake's outcome; it rides in the handshake's context.
type note struct {
	reason     Reason
	serverName string
}

type noteKey struct{}

// NewConfig returns the server TLS configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, the
// certificate for the SNI name from set's current snapshot (read once per handshake: a swap
// never changes the certificate of a connection already open).
func NewConfig(set *certs.Set) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c, ok := set.Current().Lookup(hello.ServerName); ok {
				return c, nil
			}
			if n, ok := hello.Context().Value(noteKey{}).(*note); ok {
				n.reason, n.serverName = ReasonUnknownName, hello.ServerName
				if hello.ServerName == "" {
					n.reason = ReasonNoSNI
				}
			}
			// nil, nil with no Config.Certificates: crypto/tls fails the handshake with
			// "no certificates configured" and sends the alert unrecognized_name (112); an error
			// of ours would send internal_error (80).
			return nil, nil
		},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if !slices.Contains(hello.SupportedProtos, ALPNACME) {
				return nil, nil // the common case: the base configuration, no allocation
			}
			name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
			c, ok := set.Current().TLSALPNChallenges[name]
			if !ok || c == nil {
				return nil, nil // no challenge pending: ALPN negotiation fails as for any other protocol
			}
			// RFC 8737 §3: the challenge certificate, with acme-tls/1 negotiated.
			return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{ALPNACME},
				Certificates: []tls.Certificate{*c}}, nil
		},
	}
}

// withNote returns a handshake context carrying a fresh note.
func withNote(ctx context.Context) (context.Context, *note) {
	n := &note{}
	return context.WithValue(ctx, noteKey{}, n), n
}
