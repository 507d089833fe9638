package tlsterm

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/agent/proxy/tlsterm/testcert"
)

// serve runs a Listener on 127.0.0.1:0 that echoes one line per accepted connection and records
// failures.
type served struct {
	ln       *Listener
	mu       sync.Mutex
	failures []Failure
	ok       int
}

func (s *served) fails() []Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Failure(nil), s.failures...)
}

func serve(t *testing.T, set *certs.Set, mod func(*ListenerConfig)) *served {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &served{}
	cfg := ListenerConfig{TLS: NewConfig(set),
		OnSuccess: func(*tls.Conn) { s.mu.Lock(); s.ok++; s.mu.Unlock() },
		OnFailure: func(f Failure) { s.mu.Lock(); s.failures = append(s.failures, f); s.mu.Unlock() }}
	if mod != nil {
		mod(&cfg)
	}
	s.ln = NewListener(inner, cfg)
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, "echo "+line)
			}()
		}
	}()
	t.Cleanup(func() { s.ln.Close() })
	return s
}

func waitFailure(t *testing.T, s *served, want Reason) Failure {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, f := range s.fails() {
			if f.Reason == want {
				return f
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no failure %q; got %+v", want, s.fails())
	return Failure{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSNISelection(t *testing.T) {
	ca := testcert.NewCA(t)
	exact := ca.Issue(t, "a.example.com")
	wild := ca.Issue(t, "*.example.com")
	chal := ca.Issue(t, "acme.example.com")
	var set certs.Set
	set.Replace(&certs.Snapshot{ByName: map[string]*tls.Certificate{"a.example.com": exact.TLS, "*.example.com": wild.TLS},
		TLSALPNChallenges: map[string]*tls.Certificate{"acme.example.com": chal.TLS}})
	s := serve(t, &set, nil)
	addr := s.ln.Addr().String()

	dial := func(name string, protos ...string) (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: name, RootCAs: ca.Pool, NextProtos: protos, InsecureSkipVerify: name == ""})
	}
	for _, tc := range []struct{ name, wantCN string }{
		{"a.example.com", "a.example.com"},
		{"A.Example.com", "a.example.com"},
		{"b.example.com", "*.example.com"},
	} {
		c, err := dial(tc.name, "h2", "http/1.1")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		st := c.ConnectionState()
		if cn := st.PeerCertificates[0].Subject.CommonName; cn != tc.wantCN {
			t.Errorf("%s: got certificate %q, want %q", tc.name, cn, tc.wantCN)
		}
		if st.NegotiatedProtocol != "h2" {
			t.Errorf("%s: ALPN %q, want h2", tc.name, st.NegotiatedProtocol)
		}
		_, _ = io.WriteString(c, "hi\n")
		if line, _ := bufio.NewReader(c).ReadString('\n'); line != "echo hi\n" {
			t.Errorf("%s: echo %q", tc.name, line)
		}
		c.Close()
	}

	// A name with no certificate, and no name at all: the alert unrecognized_name, never a
	// certificate.
	for _, tc := range []struct {
		name string
		want Reason
	}{{"x.b.example.com", ReasonUnknownName}, {"other.org", ReasonUnknownName}, {"", ReasonNoSNI}} {
		_, err := dial(tc.name)
		if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("%q: handshake error %v, want alert unrecognized name", tc.name, err)
		}
	}
	f := waitFailure(t, s, ReasonUnknownName)
	if f.ServerName == "" {
		t.Errorf("unknown_name failure without the name: %+v", f)
	}
	waitFailure(t, s, ReasonNoSNI)

	// TLS-ALPN-01: acme-tls/1 offered for a name with a pending challenge gets the challenge
	// certificate and the protocol; without a challenge it fails like any unknown protocol.
	c, err := dial("acme.example.com", ALPNACME)
	if err != nil {
		t.Fatalf("acme-tls/1: %v", err)
	}
	st := c.ConnectionState()
	if st.NegotiatedProtocol != ALPNACME || st.PeerCertificates[0].Subject.CommonName != "acme.example.com" {
		t.Errorf("acme-tls/1: protocol %q certificate %q", st.NegotiatedProtocol, st.PeerCertificates[0].Subject.CommonName)
	}
	c.Close()
	if _, err := dial("a.example.com", ALPNACME); err == nil {
		t.Error("acme-tls/1 without a pending challenge succeeded")
	}
	waitFailure(t, s, ReasonProtocol)

	// A swap applies to new handshakes only.
	set.Replace(&certs.Snapshot{ByName: map[string]*tls.Certificate{"a.example.com": wild.TLS}})
	c, err = dial("b.example.com")
	if err == nil {
		c.Close()
		t.Error("b.example.com still served after its wildcard was removed")
	}
}

func TestHandshakeFailureReasons(t *testing.T) {
	ca := testcert.NewCA(t)
	var set certs.Set
	set.Replace(&certs.Snapshot{ByName: map[string]*tls.Certificate{"a.example.com": ca.Issue(t, "a.example.com").TLS}})
	s := serve(t, &set, func(c *ListenerConfig) { c.HandshakeTimeout = 300 * time.Millisecond; c.MaxHandshakes = 2 })
	addr := s.ln.Addr().String()

	// Plain HTTP to the TLS port: a 400 that says so.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(b), "400 Bad Request") {
		t.Errorf("plain HTTP got %q", b)
	}
	waitFailure(t, s, ReasonNotTLS)

	// A client that rejects the certificate (it does not trust the CA) sends an alert: protocol.
	if _, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "a.example.com"}); err == nil {
		t.Error("a client without the CA accepted the certificate")
	}
	if f := waitFailure(t, s, ReasonProtocol); !strings.Contains(f.Err.Error(), "remote error") {
		t.Errorf("client alert classified from %v", f.Err)
	}

	// TLS 1.1 only: protocol.
	if _, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "a.example.com", RootCAs: ca.Pool,
		MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10}); err == nil {
		t.Error("TLS 1.1 accepted")
	}
	waitFor(t, "the TLS 1.1 hello classified as protocol", func() bool {
		for _, f := range s.fails() {
			if f.Reason == ReasonProtocol && strings.Contains(f.Err.Error(), "unsupported versions") {
				return true
			}
		}
		return false
	})

	// Two silent clients fill the handshake slots: a third is closed at once (overload); the
	// silent ones time out.
	var silent []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	time.Sleep(50 * time.Millisecond)
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFailure(t, s, ReasonOverload)
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Error("overload connection not closed")
	}
	extra.Close()
	waitFailure(t, s, ReasonTimeout)
	for _, c := range silent {
		c.Close()
	}

	// A client that connects and leaves: closed.
	c, _ = net.Dial("tcp", addr)
	_, _ = c.Write([]byte{0x16, 0x03, 0x01}) // the start of a record, then gone
	c.Close()
	waitFailure(t, s, ReasonClosed)

	// Still serving.
	tc, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "a.example.com", RootCAs: ca.Pool})
	if err != nil {
		t.Fatalf("after failures: %v", err)
	}
	if _, err := x509.ParseCertificate(tc.ConnectionState().PeerCertificates[0].Raw); err != nil {
		t.Fatal(err)
	}
	tc.Close()
}

func TestReasonIndex(t *testing.T) {
	for i, r := range Reasons {
		if r.Index() != i {
			t.Errorf("%s.Index() = %d", r, r.Index())
		}
	}
	if Reason("bogus").Index() != ReasonOther.Index() {
		t.Error("unknown reason not mapped to other")
	}
}
