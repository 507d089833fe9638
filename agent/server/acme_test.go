package server

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/server/acme"
	"github.com/nullnet/nullnet/agent/server/certstore"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
)

func TestACMEDomainsOnlyReachableHTTP(t *testing.T) {
	old := definitionWantsACME
	t.Cleanup(func() { definitionWantsACME = old })
	want := map[string]bool{"a.example.com": true, "backend.example.com": true, "tcp.example.com": true}
	definitionWantsACME = func(d Definition) bool { return want[d.Service] }
	defs := []Definition{
		{Service: "a.example.com", Protocol: "http", EntryPoint: true},
		{Service: "b.example.com", Protocol: "http", EntryPoint: true},        // acme not asked
		{Service: "backend.example.com", Protocol: "http", EntryPoint: false}, // not reachable
		{Service: "tcp.example.com", Protocol: "tcp", EntryPoint: true, ListenPort: 99},
	}
	if got := acmeDomains(defs); !slices.Equal(got, []string{"a.example.com"}) {
		t.Fatalf("acmeDomains = %v", got)
	}
}

// The issuer's results land in the certificate store that WatchCertificates streams: its
// certificates as source "acme", its challenges as they are.
func TestACMEIntoCertificateStore(t *testing.T) {
	store := certstore.New(certstore.Config{})
	var sinks ACMESinks = store
	ca := certstoretest.NewCA(t)
	chain, key := ca.Valid(t, 90, "shop.example.com")
	notAfter := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	sinks.SetSource(acme.Source, map[string]acme.Certificate{
		"shop.example.com": {CertPEM: chain, KeyPEM: key, NotAfter: notAfter}})
	c, source, ok := store.Effective("shop.example.com")
	if !ok || source != certstore.SourceACME || !bytes.Equal(c.CertPEM, chain) || !c.NotAfter.Equal(notAfter) {
		t.Fatalf("effective = %+v %q %v", c, source, ok)
	}
	sinks.SetHTTPChallenge("tok", "tok.thumb")
	sinks.SetTLSALPNChallenge("shop.example.com", chain, key)
	b, _ := store.Snapshot()
	if len(b.HttpChallenges) != 1 || b.HttpChallenges[0].KeyAuthorization != "tok.thumb" || len(b.TlsAlpnChallenges) != 1 {
		t.Fatalf("bundle challenges %v %v", b.HttpChallenges, b.TlsAlpnChallenges)
	}
	sinks.ClearHTTPChallenge("tok")
	sinks.ClearTLSALPNChallenge("shop.example.com")
	sinks.SetSource(acme.Source, nil)
	b, _ = store.Snapshot()
	if len(b.HttpChallenges)+len(b.TlsAlpnChallenges)+len(b.Certificates) != 0 {
		t.Fatalf("bundle not emptied: %v", b)
	}
}
