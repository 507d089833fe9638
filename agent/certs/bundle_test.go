package certs_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/protobuf/proto"
)

func TestParserSkipsBadEntriesOnce(t *testing.T) {
	ca := certstoretest.NewCA(t)
	a, ak := ca.Valid(t, 30, "a.example.com")
	w, wk := ca.Valid(t, 30, "*.example.com")
	_, otherKey := ca.Valid(t, 30, "b.example.com")
	b := &pb.CertificateBundle{Version: 7,
		Certificates: []*pb.Certificate{
			{Domain: "A.example.com.", CertPem: a, KeyPem: ak},
			{Domain: "*.example.com", CertPem: w, KeyPem: wk},
			{Domain: "b.example.com", CertPem: a, KeyPem: otherKey}, // mismatched
			{Domain: "c.example.com"},                               // empty
			{Domain: "", CertPem: a, KeyPem: ak},                    // no domain
		},
		HttpChallenges:    []*pb.AcmeHTTPChallenge{{Token: "tok", KeyAuthorization: "tok.x"}, {Token: ""}},
		TlsAlpnChallenges: []*pb.AcmeTLSALPNChallenge{{Domain: "a.example.com", CertPem: a, KeyPem: ak}, {Domain: "z.example.com", CertPem: []byte("x")}},
	}
	p := certs.NewParser()
	s, problems := p.Parse(b)
	if s.Version != 7 || len(s.ByName) != 2 || len(s.HTTPChallenges) != 1 || len(s.TLSALPNChallenges) != 1 {
		t.Fatalf("snapshot: %d certs, %d http, %d alpn", len(s.ByName), len(s.HTTPChallenges), len(s.TLSALPNChallenges))
	}
	if c, ok := s.Lookup("x.example.com"); !ok || c.Leaf == nil || c.Leaf.DNSNames[0] != "*.example.com" {
		t.Fatal("wildcard not served")
	}
	if _, ok := s.Lookup("b.example.com"); !ok { // the wildcard covers it; the bad exact pair is skipped
		t.Fatal("b.example.com not covered by the wildcard")
	}
	if len(problems) != 3 {
		t.Fatalf("problems = %+v", problems)
	}
	first := s.ByName["a.example.com"]
	// The same bundle again: nothing parsed again, nothing reported again.
	b2 := proto.Clone(b).(*pb.CertificateBundle)
	b2.Version = 8
	s2, problems := p.Parse(b2)
	if len(problems) != 0 || s2.ByName["a.example.com"] != first {
		t.Fatalf("second parse: problems %+v, reused %v", problems, s2.ByName["a.example.com"] == first)
	}
	// Fixed entry: now served.
	b2.Certificates[2].KeyPem = ak
	b2.Certificates[2].CertPem = a
	if s3, problems := p.Parse(b2); len(problems) != 0 || s3.ByName["b.example.com"] == nil {
		t.Fatalf("fixed entry: problems %+v", problems)
	}
}

// FuzzParseBundle: any bytes a server could send decode to a bundle (or an error) and parse to
// a snapshot without panicking; every certificate in the snapshot came from the bundle.
func FuzzParseBundle(f *testing.F) {
	ca := certstoretest.NewCA(f)
	a, ak := ca.Valid(f, 30, "a.example.com")
	seed, _ := proto.Marshal(&pb.CertificateBundle{Version: 1,
		Certificates:      []*pb.Certificate{{Domain: "a.example.com", CertPem: a, KeyPem: ak}, {Domain: "b", CertPem: []byte("-----BEGIN CERTIFICATE-----\n")}},
		HttpChallenges:    []*pb.AcmeHTTPChallenge{{Token: "t", KeyAuthorization: "k"}},
		TlsAlpnChallenges: []*pb.AcmeTLSALPNChallenge{{Domain: "a.example.com", CertPem: a, KeyPem: []byte("x")}}})
	f.Add(seed)
	f.Add([]byte{})
	p := certs.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		var b pb.CertificateBundle
		if proto.Unmarshal(data, &b) != nil {
			return
		}
		s, _ := p.Parse(&b)
		if len(s.ByName) > len(b.GetCertificates()) || len(s.TLSALPNChallenges) > len(b.GetTlsAlpnChallenges()) {
			t.Fatalf("snapshot larger than the bundle")
		}
		for name := range s.ByName {
			_, _ = s.Lookup(name)
		}
	})
}

// BenchmarkParseUnchanged10000 is the proxy's cost of a bundle of 10,000 certificates of which
// none changed (an ACME challenge set or cleared): no key is parsed again.
func BenchmarkParseUnchanged10000(b *testing.B) {
	ca := certstoretest.NewCA(b)
	chain, key := ca.Valid(b, 30, "*.bulk.example")
	bundle := &pb.CertificateBundle{}
	for i := range 10000 {
		// Distinct slices, as a bundle off the wire has.
		bundle.Certificates = append(bundle.Certificates, &pb.Certificate{Domain: fmt.Sprintf("d%05d.bulk.example", i),
			CertPem: bytes.Clone(chain), KeyPem: bytes.Clone(key)})
	}
	p := certs.NewParser()
	start := time.Now()
	p.Parse(bundle)
	b.Logf("first parse of 10,000 pairs: %s", time.Since(start))
	for b.Loop() {
		p.Parse(bundle)
	}
}
