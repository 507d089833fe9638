package acme

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/acme/pebbletest"
)

// sink is a test CertSink + ChallengeSink that answers challenges the way a proxy does: HTTP-01
// on a real HTTP listener, TLS-ALPN-01 on a real TLS listener (acme-tls/1). refuse lists hosts
// it will not answer for, to make orders fail.
type sink struct {
	mu      sync.Mutex
	http    map[string]string
	tlsALPN map[string]*tls.Certificate
	certs   map[string]Certificate
	sets    int
	refuse  map[string]bool
	changed chan struct{}
	// answered counts challenges answered, by type.
	answered map[string]int

	httpPort, tlsPort int
}

func newSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{http: map[string]string{}, tlsALPN: map[string]*tls.Certificate{}, refuse: map[string]bool{},
		answered: map[string]int{}, changed: make(chan struct{}, 1)}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.httpPort = hl.Addr().(*net.TCPAddr).Port
	hs := &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })

	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.tlsPort = tl.Addr().(*net.TCPAddr).Port
	tlsl := tls.NewListener(tl, &tls.Config{NextProtos: []string{"acme-tls/1"}, GetCertificate: s.getCert})
	go func() {
		for {
			c, err := tlsl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	t.Cleanup(func() { tl.Close() })
	return s
}

func (s *sink) serveHTTP(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
	host, _, _ := net.SplitHostPort(r.Host)
	if host == "" {
		host = r.Host
	}
	s.mu.Lock()
	ka, found := s.http[tok]
	refused := s.refuse[host]
	s.mu.Unlock()
	if !ok || !found || refused {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	s.answered[ChallengeHTTP01]++
	s.mu.Unlock()
	_, _ = w.Write([]byte(ka))
}

func (s *sink) getCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.tlsALPN[hello.ServerName]; c != nil && !s.refuse[hello.ServerName] && slices.Contains(hello.SupportedProtos, "acme-tls/1") {
		s.answered[ChallengeTLSALPN01]++
		return c, nil
	}
	return nil, nil // no certificate: handshake fails
}

func (s *sink) SetHTTPChallenge(token, keyAuth string) {
	s.mu.Lock()
	s.http[token] = keyAuth
	s.mu.Unlock()
}

func (s *sink) ClearHTTPChallenge(token string) {
	s.mu.Lock()
	delete(s.http, token)
	s.mu.Unlock()
}

func (s *sink) SetTLSALPNChallenge(domain string, certPEM, keyPEM []byte) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.tlsALPN[domain] = &c
	s.mu.Unlock()
}

func (s *sink) ClearTLSALPNChallenge(domain string) {
	s.mu.Lock()
	delete(s.tlsALPN, domain)
	s.mu.Unlock()
}

func (s *sink) SetSource(source string, certs map[string]Certificate) {
	if source != Source {
		panic("unexpected source " + source)
	}
	s.mu.Lock()
	s.certs = certs
	s.sets++
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *sink) cert(domain string) (Certificate, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.certs[domain]
	return c, ok
}

func (s *sink) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.http) + len(s.tlsALPN)
}

// waitCert waits until the sink serves a certificate for domain that pass accepts.
func (s *sink) waitCert(t *testing.T, domain string, d time.Duration, pass func(Certificate) bool) Certificate {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if c, ok := s.cert(domain); ok && (pass == nil || pass(c)) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s within %s", domain, d)
		}
		select {
		case <-s.changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// env is Consul + Pebble + a challenge-answering sink.
type env struct {
	consul *api.Client
	pebble *pebbletest.Pebble
	sink   *sink
	events *events.Store
	prefix string
}

func newEnv(t *testing.T, o pebbletest.Options) *env {
	t.Helper()
	cs := consultest.Start(t)
	s := newSink(t)
	o.HTTPPort, o.TLSPort = s.httpPort, s.tlsPort
	p := pebbletest.Start(t, o)
	return &env{consul: cs.Client(t), pebble: p, sink: s, events: events.New(1000, nil), prefix: "nullnet/acme/"}
}

// issuer starts an Issuer against the env's Consul and Pebble, serving sink (the env's when nil).
func (e *env) issuer(t *testing.T, name string, s *sink, mod func(*Config)) (*Issuer, context.CancelFunc) {
	t.Helper()
	if s == nil {
		s = e.sink
	}
	cfg := Config{
		Consul: e.consul, Logger: hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: testWriter{t}}),
		Events: e.events, Certs: s, Challenges: s,
		Email: "ops@example.com", DirectoryURL: e.pebble.DirectoryURL, CAFile: e.pebble.CAFile,
		Prefix: e.prefix, RetryMin: 300 * time.Millisecond, RetryMax: 2 * time.Second,
		LockRetry: 500 * time.Millisecond, PropagationDelay: 50 * time.Millisecond, OrderTimeout: 30 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	i, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); i.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return i, stop
}

// kinds counts the events of a kind (optionally for one domain).
func (e *env) count(kind, domain string) int {
	evs, _ := e.events.Since(0)
	n := 0
	for _, ev := range evs {
		if ev.Kind == kind && (domain == "" || ev.Fields["domain"] == domain) {
			n++
		}
	}
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
