package certstore

import (
	"fmt"
	"strings"

	metrics "github.com/hashicorp/go-metrics"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/events"
)

type recorder struct{ got []events.Event }

func (r *recorder) Emit(e events.Event) events.Event { r.got = append(r.got, e); return e }

func (r *recorder) kinds() []string {
	var k []string
	for _, e := range r.got {
		k = append(k, e.Kind+":"+e.Fields["domain"]+":"+e.Fields["source"])
	}
	r.got = nil
	return k
}

func cert(tag string) Certificate {
	return Certificate{CertPEM: []byte("cert-" + tag), KeyPEM: []byte("key-" + tag), NotAfter: time.Unix(2e9, 0)}
}

func TestStorePrecedenceAndEvents(t *testing.T) {
	rec := &recorder{}
	s := New(Config{Events: rec})
	b0, ch0 := s.Snapshot()
	if b0.GetVersion() != 1 || len(b0.GetCertificates()) != 0 {
		t.Fatalf("initial bundle = %v", b0)
	}
	s.SetSource(SourceACME, map[string]Certificate{"A.example.com.": cert("acme-a"), "b.example.com": cert("acme-b")})
	select {
	case <-ch0:
	default:
		t.Fatal("no change signalled")
	}
	if got := rec.kinds(); len(got) != 2 || got[0] != "certificate_installed:a.example.com:acme" {
		t.Fatalf("events = %v", got)
	}
	// File wins over acme for the same domain.
	s.SetSource(SourceFile, map[string]Certificate{"a.example.com": cert("file-a")})
	if c, src, _ := s.Effective("a.example.com"); src != SourceFile || string(c.CertPEM) != "cert-file-a" {
		t.Fatalf("effective = %s %s", src, c.CertPEM)
	}
	if got := rec.kinds(); len(got) != 1 || got[0] != "certificate_installed:a.example.com:file" {
		t.Fatalf("events = %v", got)
	}
	// The same set again is no change: same version, no event.
	b1, _ := s.Snapshot()
	s.SetSource(SourceFile, map[string]Certificate{"a.example.com": cert("file-a")})
	if b2, _ := s.Snapshot(); b2 != b1 || len(rec.got) != 0 {
		t.Fatalf("identical SetSource changed the store: %d -> %d, %v", b1.GetVersion(), b2.GetVersion(), rec.got)
	}
	// Removing the file brings acme's certificate back.
	s.SetSource(SourceFile, nil)
	if _, src, _ := s.Effective("a.example.com"); src != SourceACME {
		t.Fatalf("after file removal source = %s", src)
	}
	s.SetSource(SourceACME, map[string]Certificate{"b.example.com": cert("acme-b")})
	if got := rec.kinds(); len(got) != 2 || got[1] != "certificate_removed:a.example.com:" {
		t.Fatalf("events = %v", got)
	}
	b, _ := s.Snapshot()
	if len(b.GetCertificates()) != 1 || b.GetCertificates()[0].GetDomain() != "b.example.com" || b.GetVersion() <= b1.GetVersion() {
		t.Fatalf("bundle = %v", b)
	}
}

func TestStoreChallenges(t *testing.T) {
	s := New(Config{})
	v := func() uint64 { b, _ := s.Snapshot(); return b.GetVersion() }
	start := v()
	s.SetHTTPChallenge("tok", "tok.auth")
	s.SetHTTPChallenge("tok", "tok.auth") // no change
	s.SetTLSALPNChallenge("X.example.com", []byte("c"), []byte("k"))
	s.SetTLSALPNChallenge("x.example.com", []byte("c"), []byte("k")) // no change
	if v() != start+2 {
		t.Fatalf("version %d, want %d", v(), start+2)
	}
	b, _ := s.Snapshot()
	if len(b.GetHttpChallenges()) != 1 || b.GetHttpChallenges()[0].GetKeyAuthorization() != "tok.auth" ||
		len(b.GetTlsAlpnChallenges()) != 1 || b.GetTlsAlpnChallenges()[0].GetDomain() != "x.example.com" {
		t.Fatalf("bundle = %v", b)
	}
	s.ClearHTTPChallenge("tok")
	s.ClearHTTPChallenge("tok")
	s.ClearTLSALPNChallenge("x.example.com")
	if b, _ := s.Snapshot(); v() != start+4 || len(b.GetHttpChallenges())+len(b.GetTlsAlpnChallenges()) != 0 {
		t.Fatalf("after clear: %v", b)
	}
}

func TestStoreExpiring(t *testing.T) {
	rec := &recorder{}
	s := New(Config{Events: rec})
	now := time.Now()
	c := cert("a")
	c.NotAfter = now.Add(10 * 24 * time.Hour)
	s.SetSource(SourceFile, map[string]Certificate{"a.example.com": c, "b.example.com": cert("b")})
	rec.got = nil
	s.CheckExpiry(now)
	s.CheckExpiry(now.Add(time.Hour)) // within a day: not again
	if got := rec.kinds(); len(got) != 1 || got[0] != "certificate_expiring:a.example.com:file" {
		t.Fatalf("events = %v", got)
	}
	s.CheckExpiry(now.Add(25 * time.Hour))
	if got := rec.kinds(); len(got) != 1 {
		t.Fatalf("a day later: events = %v", got)
	}
}

func TestStoreExpiryGauge(t *testing.T) {
	sink := metrics.NewInmemSink(time.Minute, time.Minute)
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableServiceLabel = false, false, false
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		t.Fatal(err)
	}
	s := New(Config{})
	c := cert("a")
	c.NotAfter = time.Now().Add(time.Hour)
	s.SetSource(SourceFile, map[string]Certificate{"a.example.com": c})
	s.CheckExpiry(time.Now())
	found := false
	for _, iv := range sink.Data() {
		for name, g := range iv.Gauges {
			if strings.HasPrefix(name, "nullnet.server.certificate.expiry_seconds;domain=a.example.com") {
				found = true
				if g.Value < 3500 || g.Value > 3600 {
					t.Fatalf("gauge = %v, want about 3600", g.Value)
				}
			}
		}
	}
	if !found {
		t.Fatal("no expiry gauge for a.example.com")
	}
}

func TestStoreEventsBounded(t *testing.T) {
	rec := &recorder{}
	s := New(Config{Events: rec})
	many := map[string]Certificate{}
	for i := range 1000 {
		many[fmt.Sprintf("d%04d.example.com", i)] = cert("x")
	}
	s.SetSource(SourceFile, many)
	if len(rec.got) != maxEventsPerChange+1 || rec.got[maxEventsPerChange].Fields["count"] != "980" {
		t.Fatalf("%d events, last %+v", len(rec.got), rec.got[len(rec.got)-1])
	}
	if b, _ := s.Snapshot(); len(b.GetCertificates()) != 1000 {
		t.Fatalf("%d certificates in the bundle", len(b.GetCertificates()))
	}
	rec.got = nil
	s.SetSource(SourceFile, nil)
	if len(rec.got) != maxEventsPerChange+1 || rec.got[0].Kind != "certificate_removed" {
		t.Fatalf("%d removal events", len(rec.got))
	}
}
