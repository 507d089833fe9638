// Package acme obtains and renews certificates for the stack services marked `acme = true`,
// with an ACME CA (Let's Encrypt, or a private one such as Pebble), on behalf of every nullnet
// server.
//
// State lives in Consul KV under one prefix (see store.go): the account, one record per
// domain, and the pending challenges. Every server watches that prefix: it serves the stored
// certificates through its CertSink and the pending challenges through its ChallengeSink, so a
// proxy answers a challenge whichever server it follows. Ordering runs on one server at a time,
// under a Consul lock; the holder re-reads a domain's record after taking the lock, so a second
// server never orders what the first has just stored, and a restarted server orders nothing
// that KV already holds.
//
// Failures are per domain: a failed order backs off (exponentially, capped) and emits
// acme_order_failed; other domains and the certificates already served are unaffected.
package acme

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/certstore"
)

// Challenge types.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// Source is the certificate-store source name of ACME certificates.
const Source = "acme"

// Certificate is one domain's certificate as handed to the CertSink: the store's own type, so
// that the store is the sink with no conversion.
type Certificate = certstore.Certificate

// CertSink receives the full set of ACME certificates whenever it changes.
type CertSink interface {
	SetSource(source string, certs map[string]Certificate)
}

// ChallengeSink serves pending challenges to the proxies (HTTP-01 on :80, TLS-ALPN-01 on
// :443).
type ChallengeSink interface {
	SetHTTPChallenge(token, keyAuth string)
	ClearHTTPChallenge(token string)
	SetTLSALPNChallenge(domain string, certPEM, keyPEM []byte)
	ClearTLSALPNChallenge(domain string)
}

// Config configures an Issuer.
type Config struct {
	Consul *api.Client
	Logger hclog.Logger
	// Events receives certificate_renewed and acme_order_failed (certificate_installed is the
	// certificate store's, on every server). Pass an
	// events.Aggregator keyed by events.RemoteTriggered so failures are summarised.
	Events events.Emitter

	Certs      CertSink
	Challenges ChallengeSink

	// Email is the account contact (optional for most CAs).
	Email string
	// DirectoryURL is the CA's ACME directory.
	DirectoryURL string
	// CAFile, when set, is the only trusted root for the directory's HTTPS (a private CA such
	// as Pebble's test CA). HTTPClient overrides it.
	CAFile     string
	HTTPClient *http.Client
	// Challenge is ChallengeHTTP01 (default) or ChallengeTLSALPN01.
	Challenge string

	// Prefix is the Consul KV prefix (default "nullnet/acme/").
	Prefix string
	// RenewBefore is the renewal window before expiry (default 30 days).
	RenewBefore time.Duration
	// CheckInterval bounds how long the issuer sleeps between looks at its domains (default
	// 1 h); changes in KV or in the domain set wake it at once.
	CheckInterval time.Duration
	// RetryMin and RetryMax bound the per-domain backoff after a failed order (defaults 1 min
	// and 6 h).
	RetryMin, RetryMax time.Duration
	// LockRetry is how long a server that found the lock taken waits before looking again
	// (default 15 s, Consul's lock delay).
	LockRetry time.Duration
	// PropagationDelay is the wait between storing a challenge and asking the CA to validate
	// it, so that the other servers' proxies have it too (default 2 s).
	PropagationDelay time.Duration
	// OrderTimeout bounds one order (default 5 min).
	OrderTimeout time.Duration
}

func (c *Config) setDefaults() error {
	if c.Consul == nil {
		return errors.New("acme: a Consul client is required")
	}
	if c.DirectoryURL == "" {
		return errors.New("acme: directory_url is required")
	}
	if c.Certs == nil || c.Challenges == nil {
		return errors.New("acme: a certificate sink and a challenge sink are required")
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Events == nil {
		c.Events = nopEmitter{}
	}
	switch c.Challenge {
	case "":
		c.Challenge = ChallengeHTTP01
	case ChallengeHTTP01, ChallengeTLSALPN01:
	default:
		return fmt.Errorf("acme: unknown challenge %q", c.Challenge)
	}
	if c.Prefix == "" {
		c.Prefix = "nullnet/acme/"
	}
	if c.Prefix[len(c.Prefix)-1] != '/' {
		c.Prefix += "/"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.RenewBefore, 30*24*time.Hour)
	def(&c.CheckInterval, time.Hour)
	def(&c.RetryMin, time.Minute)
	def(&c.RetryMax, 6*time.Hour)
	def(&c.LockRetry, 15*time.Second)
	def(&c.PropagationDelay, 2*time.Second)
	def(&c.OrderTimeout, 5*time.Minute)
	if c.HTTPClient == nil {
		hc, err := httpClient(c.CAFile)
		if err != nil {
			return err
		}
		c.HTTPClient = hc
	}
	return nil
}

// httpClient talks to the directory, trusting only caFile's roots when it is set.
func httpClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 30 * time.Second
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("acme: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme: ca_file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}, nil
}

type nopEmitter struct{}

func (nopEmitter) Emit(e events.Event) events.Event { return e }
