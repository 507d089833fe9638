package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// selfSigned makes a certificate + key for names, valid [nb, na).
func selfSigned(t testing.TB, nb, na time.Time, names ...string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: nb, NotAfter: na}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}))
}

func TestDecodeCert(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	cert, key := selfSigned(t, now, now.Add(90*24*time.Hour), "a.example.com")
	_, otherKey := selfSigned(t, now, now.Add(time.Hour), "a.example.com")
	enc := func(r certRecord) []byte { b, _ := json.Marshal(r); return b }
	tests := []struct {
		name, domain string
		raw          []byte
		err          string
	}{
		{"good", "a.example.com", enc(certRecord{Domain: "a.example.com", CertPEM: cert, KeyPEM: key}), ""},
		{"not json", "a.example.com", []byte("{"), "decode"},
		{"key names another domain", "b.example.com", enc(certRecord{Domain: "a.example.com", CertPEM: cert, KeyPEM: key}), "key names"},
		{"wrong key", "a.example.com", enc(certRecord{Domain: "a.example.com", CertPEM: cert, KeyPEM: otherKey}), "certificate and key"},
		{"no certificate", "a.example.com", enc(certRecord{Domain: "a.example.com", KeyPEM: key}), "certificate and key"},
		{"too large", "a.example.com", make([]byte, maxRecord+1), "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeCert(tc.domain, tc.raw)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !r.NotAfter.Equal(now.Add(90*24*time.Hour)) || !r.NotBefore.Equal(now) {
					t.Fatalf("validity %v..%v not taken from the leaf", r.NotBefore, r.NotAfter)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
	// A certificate that does not cover the domain.
	c2, k2 := selfSigned(t, now, now.Add(time.Hour), "other.example.com")
	raw, _ := json.Marshal(certRecord{Domain: "a.example.com", CertPEM: c2, KeyPEM: k2})
	if _, err := decodeCert("a.example.com", raw); err == nil || !strings.Contains(err.Error(), "does not cover") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzDecodeCert(f *testing.F) {
	now := time.Now()
	cert, key := selfSigned(f, now, now.Add(time.Hour), "a.example.com")
	good, _ := json.Marshal(certRecord{Domain: "a.example.com", CertPEM: cert, KeyPEM: key})
	f.Add("a.example.com", good)
	f.Add("a.example.com", []byte(`{"domain":"a.example.com","cert_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}`))
	f.Add("", []byte("null"))
	f.Fuzz(func(t *testing.T, domain string, raw []byte) {
		r, err := decodeCert(domain, raw)
		if err == nil && (r == nil || r.Domain != domain) {
			t.Fatalf("accepted a record that does not name %q", domain)
		}
	})
}

func TestRenewalDue(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	const dir = "https://ca/dir"
	window := 30 * 24 * time.Hour
	rec := func(nb, na time.Time, d string) *certRecord {
		return &certRecord{NotBefore: nb, NotAfter: na, DirectoryURL: d}
	}
	day := 24 * time.Hour
	tests := []struct {
		name string
		r    *certRecord
		due  bool
	}{
		{"none", nil, true},
		{"fresh 90-day", rec(now.Add(-day), now.Add(89*day), dir), false},
		{"31 days left", rec(now.Add(-59*day), now.Add(31*day), dir), false},
		{"30 days left", rec(now.Add(-60*day), now.Add(30*day), dir), true},
		{"expired", rec(now.Add(-91*day), now.Add(-day), dir), true},
		{"other directory", rec(now.Add(-day), now.Add(89*day), "https://staging/dir"), true},
		// Six-day certificates: renewed two thirds in (4 days), not at once.
		{"6-day, 3 days in", rec(now.Add(-3*day), now.Add(3*day), dir), false},
		{"6-day, 4 days in", rec(now.Add(-4*day), now.Add(2*day), dir), true},
	}
	for _, tc := range tests {
		if got := renewalDue(tc.r, dir, now, window); got != tc.due {
			t.Errorf("%s: due = %v, want %v", tc.name, got, tc.due)
		}
	}
}

func TestValidDomain(t *testing.T) {
	for _, d := range []string{"a.example.com", "x-1.b2.io", "localhost"} {
		if err := validDomain(d); err != nil {
			t.Errorf("%q: %v", d, err)
		}
	}
	for _, d := range []string{"", "*.example.com", "a/b.com", "A.example.com", ".a.com", "a.com.", "a..com", "a b.com", strings.Repeat("a", 64) + ".com"} {
		if validDomain(d) == nil {
			t.Errorf("%q accepted", d)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	lo, hi := time.Minute, 6*time.Hour
	prevMax := time.Duration(0)
	for n := 1; n <= 20; n++ {
		want := min(lo<<(n-1), hi)
		for range 50 {
			d := retryDelay(n, lo, hi)
			if d < want/2 || d > want {
				t.Fatalf("n=%d: delay %s outside [%s, %s]", n, d, want/2, want)
			}
		}
		if want < prevMax {
			t.Fatalf("n=%d: bound shrank", n)
		}
		prevMax = want
	}
}

// plan orders missing and due domains, waits for backoffs (local or recorded in KV), and
// nothing before the first KV reading.
func TestPlan(t *testing.T) {
	now := time.Now()
	i := &Issuer{cfg: Config{DirectoryURL: "d", RenewBefore: 30 * 24 * time.Hour, RetryMax: time.Hour},
		domains: map[string]struct{}{"new.com": {}, "fresh.com": {}, "old.com": {}, "backoff.com": {}, "kvbackoff.com": {}},
		backoff: map[string]*retryState{"backoff.com": {failures: 1, next: now.Add(time.Minute)}}}
	if due, _ := i.plan(now); due != nil {
		t.Fatalf("planned %v before KV was read", due)
	}
	i.loaded = true
	i.kv = kvState{certs: map[string]*certRecord{
		"fresh.com": {DirectoryURL: "d", NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour)},
		"old.com":   {DirectoryURL: "d", NotBefore: now.Add(-80 * 24 * time.Hour), NotAfter: now.Add(10 * 24 * time.Hour)},
	}, fails: map[string]failureRecord{"kvbackoff.com": {Failures: 2, NextAttempt: now.Add(30 * time.Second)}}}
	due, next := i.plan(now)
	if strings.Join(due, ",") != "new.com,old.com" {
		t.Fatalf("due = %v", due)
	}
	if !next.Equal(now.Add(30 * time.Second)) {
		t.Fatalf("next = %v, want the KV backoff in 30s", next.Sub(now))
	}
	// A recorded next attempt beyond RetryMax (clock skew, a hand edit) is not obeyed.
	i.kv.fails["kvbackoff.com"] = failureRecord{NextAttempt: now.Add(100 * time.Hour)}
	if due, _ := i.plan(now); strings.Join(due, ",") != "kvbackoff.com,new.com,old.com" {
		t.Fatalf("due = %v", due)
	}
}
