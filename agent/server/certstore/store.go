// Package certstore holds the TLS certificates the servers stream to every proxy
// (WatchCertificates): certificates merged from several sources ("file" from server.certs_dir,
// "acme" from the ACME issuer) plus the ACME challenges the proxies must answer.
//
// Precedence: when two sources hold a certificate for the same domain, "file" wins over "acme",
// which wins over any other source (others by name). An operator's file therefore always
// overrides an issued certificate, and removing the file brings the issued one back.
//
// The store emits certificate_installed when the certificate in effect for a domain changes
// (new domain, new bytes, or another source took over) and certificate_removed when a domain
// has none left; sources must not emit those themselves.
package certstore

import (
	"bytes"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	pb "github.com/nullnet/nullnet/proto"
)

// Sources known to the store.
const (
	SourceFile = "file"
	SourceACME = "acme"
)

// ExpiringWithin is when a certificate in service counts as expiring (certificate_expiring).
const ExpiringWithin = 14 * 24 * time.Hour

// expiringRepeat is the shortest interval between two certificate_expiring events for a domain.
const expiringRepeat = 24 * time.Hour

// Certificate is one certificate of a source. The map key of SetSource is its domain
// ("example.com" or "*.example.com").
type Certificate struct {
	CertPEM  []byte // leaf first, then the chain
	KeyPEM   []byte
	NotAfter time.Time // the leaf's
}

func (c Certificate) equal(o Certificate) bool {
	return c.NotAfter.Equal(o.NotAfter) && bytes.Equal(c.CertPEM, o.CertPEM) && bytes.Equal(c.KeyPEM, o.KeyPEM)
}

// Config configures a Store.
type Config struct {
	Logger hclog.Logger
	// Events receives certificate_installed, certificate_removed and certificate_expiring
	// (nil = none).
	Events events.Emitter
}

type alpnChallenge struct{ certPEM, keyPEM []byte }

type effective struct {
	source string
	cert   Certificate
}

// Store is safe for concurrent use. Writers never wait for readers: Snapshot hands out the
// current bundle and a channel closed on the next change, as the port table does.
type Store struct {
	logger hclog.Logger
	events events.Emitter

	mu        sync.Mutex
	sources   map[string]map[string]Certificate
	httpCh    map[string]string
	alpnCh    map[string]alpnChallenge
	effective map[string]effective
	version   uint64
	bundle    *pb.CertificateBundle
	changed   chan struct{}
	// expiringSent is when certificate_expiring was last emitted per domain.
	expiringSent map[string]time.Time
}

// New returns an empty store at version 1 (the empty set is a valid, known state).
func New(cfg Config) *Store {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &Store{logger: cfg.Logger, events: cfg.Events, sources: map[string]map[string]Certificate{},
		httpCh: map[string]string{}, alpnCh: map[string]alpnChallenge{}, effective: map[string]effective{},
		changed: make(chan struct{}), expiringSent: map[string]time.Time{}}
	s.publishLocked()
	return s
}

// NormalizeDomain is the store's spelling of a domain: lower case, no trailing dot.
func NormalizeDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }

// sourceRank orders sources for precedence: lower wins.
func sourceRank(source string) int {
	switch source {
	case SourceFile:
		return 0
	case SourceACME:
		return 1
	}
	return 2
}

// SetSource replaces every certificate of source with certs (nil or empty removes them all).
// Entries without a certificate or key are ignored. The store keeps its own copy of the map;
// the byte slices are shared and must not be modified afterwards.
func (s *Store) SetSource(source string, certs map[string]Certificate) {
	m := make(map[string]Certificate, len(certs))
	for d, c := range certs {
		d = NormalizeDomain(d)
		if d == "" || len(c.CertPEM) == 0 || len(c.KeyPEM) == 0 {
			continue
		}
		m[d] = c
	}
	var evs []events.Event
	s.mu.Lock()
	if len(m) == 0 {
		delete(s.sources, source)
	} else {
		s.sources[source] = m
	}
	evs = s.recomputeLocked()
	if evs != nil {
		s.publishLocked()
	}
	s.mu.Unlock()
	s.emit(evs)
}

// SetHTTPChallenge publishes an ACME HTTP-01 key authorization for token.
func (s *Store) SetHTTPChallenge(token, keyAuth string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.httpCh[token]; ok && v == keyAuth {
		return
	}
	s.httpCh[token] = keyAuth
	s.publishLocked()
}

// ClearHTTPChallenge withdraws token's HTTP-01 challenge.
func (s *Store) ClearHTTPChallenge(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.httpCh[token]; !ok {
		return
	}
	delete(s.httpCh, token)
	s.publishLocked()
}

// SetTLSALPNChallenge publishes the TLS-ALPN-01 challenge certificate for domain.
func (s *Store) SetTLSALPNChallenge(domain string, certPEM, keyPEM []byte) {
	domain = NormalizeDomain(domain)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.alpnCh[domain]; ok && bytes.Equal(v.certPEM, certPEM) && bytes.Equal(v.keyPEM, keyPEM) {
		return
	}
	s.alpnCh[domain] = alpnChallenge{certPEM: certPEM, keyPEM: keyPEM}
	s.publishLocked()
}

// ClearTLSALPNChallenge withdraws domain's TLS-ALPN-01 challenge.
func (s *Store) ClearTLSALPNChallenge(domain string) {
	domain = NormalizeDomain(domain)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.alpnCh[domain]; !ok {
		return
	}
	delete(s.alpnCh, domain)
	s.publishLocked()
}

// Snapshot returns the current bundle (shared: do not modify) and a channel closed on the next
// change. Its version increases with every distinct change.
func (s *Store) Snapshot() (*pb.CertificateBundle, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundle, s.changed
}

// Effective returns the certificate in service for domain and its source.
func (s *Store) Effective(domain string) (Certificate, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.effective[NormalizeDomain(domain)]
	return e.cert, e.source, ok
}

// CheckExpiry sets the expiry gauge of every domain in service and emits certificate_expiring
// for those expiring within ExpiringWithin, at most once per day per domain. The server calls
// it periodically.
func (s *Store) CheckExpiry(now time.Time) {
	expiring := &bounded{}
	s.mu.Lock()
	for d := range s.expiringSent {
		if _, ok := s.effective[d]; !ok {
			delete(s.expiringSent, d)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(s.effective)) {
		e := s.effective[d]
		left := e.cert.NotAfter.Sub(now)
		setExpiryGauge(d, left)
		if left > ExpiringWithin {
			delete(s.expiringSent, d)
			continue
		}
		if at, ok := s.expiringSent[d]; ok && now.Sub(at) < expiringRepeat {
			continue
		}
		s.expiringSent[d] = now
		sev, msg := events.Warning, "certificate for "+d+" expires in "+left.Round(time.Minute).String()
		if left <= 0 {
			sev, msg = events.Error, "certificate for "+d+" has expired"
		}
		expiring.add(events.Event{Kind: events.CertificateExpiring, Severity: sev, Message: msg,
			Fields: map[string]string{"domain": d, "source": e.source,
				"not_after": e.cert.NotAfter.UTC().Format(time.RFC3339)}})
	}
	s.mu.Unlock()
	evs := expiring.evs
	if more := expiring.more(); more > 0 {
		evs = append(evs, events.Event{Kind: events.CertificateExpiring, Severity: events.Warning,
			Message: strconv.Itoa(more) + " more certificates expire within 14 days", Fields: map[string]string{"count": strconv.Itoa(more)}})
	}
	s.emit(evs)
}

func setExpiryGauge(domain string, left time.Duration) {
	metrics.SetGaugeWithLabels([]string{"nullnet", "server", "certificate", "expiry_seconds"},
		float32(left.Seconds()), []metrics.Label{{Name: "domain", Value: domain}})
}

// recomputeLocked rebuilds the effective set from the sources and returns the events of the
// change (nil when nothing in effect changed).
func (s *Store) recomputeLocked() []events.Event {
	names := slices.SortedFunc(maps.Keys(s.sources), func(a, b string) int {
		if ra, rb := sourceRank(a), sourceRank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	next := map[string]effective{}
	for _, src := range names {
		for d, c := range s.sources[src] {
			if _, taken := next[d]; !taken {
				next[d] = effective{source: src, cert: c}
			}
		}
	}
	installed := &bounded{}
	for _, d := range slices.Sorted(maps.Keys(next)) {
		n := next[d]
		if o, ok := s.effective[d]; ok && o.source == n.source && o.cert.equal(n.cert) {
			continue
		}
		na := n.cert.NotAfter.UTC().Format(time.RFC3339)
		installed.add(events.Event{Kind: events.CertificateInstalled,
			Message: "certificate for " + d + " from " + n.source + " in service",
			Fields:  map[string]string{"domain": d, "source": n.source, "not_after": na}})
		setExpiryGauge(d, time.Until(n.cert.NotAfter))
	}
	removed := &bounded{}
	for _, d := range slices.Sorted(maps.Keys(s.effective)) {
		if _, ok := next[d]; ok {
			continue
		}
		removed.add(events.Event{Kind: events.CertificateRemoved,
			Message: "no certificate for " + d + " any more", Fields: map[string]string{"domain": d}})
	}
	s.effective = next
	if installed.n+removed.n == 0 {
		return nil
	}
	evs := installed.evs
	if more := installed.more(); more > 0 {
		evs = append(evs, events.Event{Kind: events.CertificateInstalled, Message: strconv.Itoa(more) + " more certificates in service",
			Fields: map[string]string{"count": strconv.Itoa(more)}})
	}
	evs = append(evs, removed.evs...)
	if more := removed.more(); more > 0 {
		evs = append(evs, events.Event{Kind: events.CertificateRemoved, Message: strconv.Itoa(more) + " more certificates removed",
			Fields: map[string]string{"count": strconv.Itoa(more)}})
	}
	return evs
}

// maxEventsPerChange bounds the events of one kind for one change: loading a directory of
// 10,000 certificates gives this many certificate_installed events and one summary (count),
// not 10,000 that would flush the event ring.
const maxEventsPerChange = 20

// bounded collects the events of one kind for one change, keeping the first few; the caller
// adds one summary with the count of the others. (The event store logs every event.)
type bounded struct {
	evs []events.Event
	n   int
}

func (b *bounded) add(e events.Event) {
	b.n++
	if b.n <= maxEventsPerChange {
		b.evs = append(b.evs, e)
	}
}

// more is how many events were left out.
func (b *bounded) more() int { return b.n - len(b.evs) }

// publishLocked builds the bundle of the current state under a new version and wakes the
// watchers.
func (s *Store) publishLocked() {
	s.version++
	b := &pb.CertificateBundle{Version: s.version}
	for _, d := range slices.Sorted(maps.Keys(s.effective)) {
		e := s.effective[d]
		b.Certificates = append(b.Certificates, &pb.Certificate{Domain: d, CertPem: e.cert.CertPEM,
			KeyPem: e.cert.KeyPEM, NotAfterUnix: e.cert.NotAfter.Unix(), Source: e.source})
	}
	for _, t := range slices.Sorted(maps.Keys(s.httpCh)) {
		b.HttpChallenges = append(b.HttpChallenges, &pb.AcmeHTTPChallenge{Token: t, KeyAuthorization: s.httpCh[t]})
	}
	for _, d := range slices.Sorted(maps.Keys(s.alpnCh)) {
		c := s.alpnCh[d]
		b.TlsAlpnChallenges = append(b.TlsAlpnChallenges, &pb.AcmeTLSALPNChallenge{Domain: d, CertPem: c.certPEM, KeyPem: c.keyPEM})
	}
	s.bundle = b
	close(s.changed)
	s.changed = make(chan struct{})
	metrics.SetGauge([]string{"nullnet", "server", "certificates", "version"}, float32(s.version))
	metrics.SetGauge([]string{"nullnet", "server", "certificates", "count"}, float32(len(s.effective)))
}

func (s *Store) emit(evs []events.Event) {
	if s.events == nil {
		return
	}
	for _, e := range evs {
		s.events.Emit(e)
	}
}
