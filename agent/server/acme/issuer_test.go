package acme

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/acme/pebbletest"
)

// verifyChain checks that c is a certificate for domain issued by Pebble's root.
func verifyChain(t *testing.T, e *env, c Certificate, domain string) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	rest := c.CertPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, x)
	}
	if len(certs) < 2 {
		t.Fatalf("want leaf + chain, got %d certificates", len(certs))
	}
	inter := x509.NewCertPool()
	for _, x := range certs[1:] {
		inter.AddCert(x)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: e.pebble.Roots(t), Intermediates: inter}); err != nil {
		t.Fatalf("certificate does not verify against pebble's root: %v", err)
	}
	return certs[0]
}

func TestIssueHTTP01(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	i, _ := e.issuer(t, "s1", nil, nil)
	start := time.Now()
	i.SetDomains([]string{"app.example.com"})
	c := e.sink.waitCert(t, "app.example.com", 60*time.Second, nil)
	t.Logf("HTTP-01 issuance took %s", time.Since(start).Round(time.Millisecond))
	leaf := verifyChain(t, e, c, "app.example.com")
	if !leaf.NotAfter.Equal(c.NotAfter) {
		t.Fatalf("NotAfter %v, leaf says %v", c.NotAfter, leaf.NotAfter)
	}
	if n := len(mustEvents(e)); n != 0 {
		t.Fatalf("%d events for a first issuance (certificate_installed is the store's)", n)
	}
	// The challenge is gone from KV and from the sink once the order is done.
	waitFor(t, 5*time.Second, "challenges cleared", func() bool {
		pairs, _, _ := e.consul.KV().List(e.prefix+"challenges/", nil)
		return len(pairs) == 0 && e.sink.pending() == 0
	})
	// Account and certificate are in KV under the documented keys.
	pairs, _, err := e.consul.KV().List(e.prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range pairs {
		keys = append(keys, strings.TrimPrefix(p.Key, e.prefix))
	}
	// "lock" stays behind without a session once released, as Consul locks do.
	if len(keys) != 3 || !strings.HasPrefix(keys[0], "accounts/") || keys[1] != "certs/app.example.com" || keys[2] != "lock" {
		t.Fatalf("KV keys %v", keys)
	}
	if e.pebble.Issued() != 1 || i.Orders() != 1 {
		t.Fatalf("pebble issued %d, orders %d; want 1, 1", e.pebble.Issued(), i.Orders())
	}
}

func TestIssueTLSALPN01(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	i, _ := e.issuer(t, "s1", nil, func(c *Config) { c.Challenge = ChallengeTLSALPN01 })
	i.SetDomains([]string{"tls.example.com"})
	c := e.sink.waitCert(t, "tls.example.com", 60*time.Second, nil)
	verifyChain(t, e, c, "tls.example.com")
	e.sink.mu.Lock()
	answered := maps.Clone(e.sink.answered)
	e.sink.mu.Unlock()
	if answered[ChallengeTLSALPN01] == 0 || answered[ChallengeHTTP01] != 0 {
		t.Fatalf("challenges answered: %v; want tls-alpn-01 only", answered)
	}
	waitFor(t, 5*time.Second, "challenges cleared", func() bool { return e.sink.pending() == 0 })
}

// Two servers against one Consul: one order, both serve the certificate.
func TestTwoServersOneIssuance(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	s2 := newSink(t) // second server's proxies: answers nothing Pebble asks (it is not on Pebble's ports)
	i1, _ := e.issuer(t, "s1", nil, nil)
	i2, _ := e.issuer(t, "s2", s2, nil)
	domains := []string{"a.example.com", "b.example.com"}
	i1.SetDomains(domains)
	i2.SetDomains(domains)
	for _, d := range domains {
		c1 := e.sink.waitCert(t, d, 60*time.Second, nil)
		c2 := s2.waitCert(t, d, 10*time.Second, nil)
		if string(c1.CertPEM) != string(c2.CertPEM) {
			t.Fatalf("%s: the servers serve different certificates", d)
		}
	}
	time.Sleep(time.Second) // a second order would have started by now
	if got := i1.Orders() + i2.Orders(); got != 2 || e.pebble.Issued() != 2 {
		t.Fatalf("orders %d+%d, pebble issued %d; want one per domain", i1.Orders(), i2.Orders(), e.pebble.Issued())
	}
}

// A restarted server loads its certificates from KV and orders nothing.
func TestRestartDoesNotReissue(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	i1, stop := e.issuer(t, "before", nil, nil)
	i1.SetDomains([]string{"keep.example.com"})
	c1 := e.sink.waitCert(t, "keep.example.com", 60*time.Second, nil)
	stop()
	pair, _, err := e.consul.KV().Get(e.prefix+"certs/keep.example.com", nil)
	if err != nil || pair == nil {
		t.Fatalf("stored certificate: %v %v", pair, err)
	}

	fresh := newSink(t)
	i2, _ := e.issuer(t, "after", fresh, nil)
	i2.SetDomains([]string{"keep.example.com"})
	c2 := fresh.waitCert(t, "keep.example.com", 10*time.Second, nil)
	if string(c1.CertPEM) != string(c2.CertPEM) {
		t.Fatal("restarted server serves another certificate")
	}
	time.Sleep(time.Second)
	after, _, _ := e.consul.KV().Get(e.prefix+"certs/keep.example.com", nil)
	if i2.Orders() != 0 || e.pebble.Issued() != 1 || after.ModifyIndex != pair.ModifyIndex {
		t.Fatalf("after restart: orders %d, pebble issued %d, modify index %d -> %d", i2.Orders(), e.pebble.Issued(), pair.ModifyIndex, after.ModifyIndex)
	}
}

// Certificates are renewed in their window; short-lived ones two thirds into their life.
func TestRenewal(t *testing.T) {
	e := newEnv(t, pebbletest.Options{ValidityPeriod: 45 * time.Second})
	i, _ := e.issuer(t, "s1", nil, nil)
	i.SetDomains([]string{"renew.example.com"})
	c1 := e.sink.waitCert(t, "renew.example.com", 60*time.Second, nil)
	// Renewal is due two thirds into the 45 s life (30 s), long before expiry.
	c2 := e.sink.waitCert(t, "renew.example.com", 45*time.Second, func(c Certificate) bool { return c.NotAfter.After(c1.NotAfter) })
	if lead := c1.NotAfter.Sub(time.Now()); lead < 0 {
		t.Fatalf("renewed only after expiry (%s late)", -lead)
	}
	verifyChain(t, e, c2, "renew.example.com")
	if n := e.count(events.CertificateRenewed, "renew.example.com"); n < 1 {
		t.Fatal("no certificate_renewed event")
	}
}

// An order that cannot be validated fails, emits acme_order_failed, is retried with backoff,
// and does not disturb the other domain.
func TestOrderFailureBacksOff(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	e.sink.mu.Lock()
	e.sink.refuse["fail.example.com"] = true
	e.sink.mu.Unlock()
	i, stop := e.issuer(t, "s1", nil, nil)
	i.SetDomains([]string{"fail.example.com", "ok.example.com"})
	e.sink.waitCert(t, "ok.example.com", 60*time.Second, nil)
	waitFor(t, 30*time.Second, "three failed orders", func() bool { return e.count(events.ACMEOrderFailed, "fail.example.com") >= 3 })
	evs, _ := e.events.Since(0)
	var times []time.Time
	for _, ev := range evs {
		if ev.Kind == events.ACMEOrderFailed {
			if ev.Fields["reason"] == "" {
				t.Fatal("acme_order_failed without a reason")
			}
			times = append(times, ev.Time)
		}
	}
	t.Logf("failures at %v; reason: %s", times, evs[len(evs)-1].Fields["reason"])
	// RetryMin is 300 ms with jitter to [150 ms, 300 ms), then doubling: gaps never shrink to
	// nothing, and nothing floods.
	for k := 1; k < len(times); k++ {
		if gap := times[k].Sub(times[k-1]); gap < 140*time.Millisecond {
			t.Fatalf("retry %d came %s after the previous one", k, gap)
		}
	}
	if _, ok := e.sink.cert("fail.example.com"); ok {
		t.Fatal("a certificate for the failing domain appeared")
	}

	// The backoff is in KV: a restarted server (or another one) does not start the count
	// again, and waits for the recorded next attempt.
	stop()
	pair, _, err := e.consul.KV().Get(e.prefix+"failures/fail.example.com", nil)
	if err != nil || pair == nil {
		t.Fatalf("no failure record: %v", err)
	}
	var rec failureRecord
	if err := json.Unmarshal(pair.Value, &rec); err != nil || rec.Failures < 3 || rec.Reason == "" {
		t.Fatalf("failure record %s (%v)", pair.Value, err)
	}
	before := e.count(events.ACMEOrderFailed, "fail.example.com")
	i, _ = e.issuer(t, "s1-restarted", nil, func(c *Config) { c.RetryMin, c.RetryMax = 2*time.Second, 2*time.Second })
	i.SetDomains([]string{"fail.example.com", "ok.example.com"})
	waitFor(t, 30*time.Second, "a failure after the restart", func() bool { return e.count(events.ACMEOrderFailed, "fail.example.com") > before })
	evs = mustEvents(e)
	if last := evs[len(evs)-1]; last.Time.Before(rec.NextAttempt.Add(-50 * time.Millisecond)) {
		t.Fatalf("restarted server retried at %v, before the recorded next attempt %v", last.Time, rec.NextAttempt)
	}
	if got := e.count(events.ACMEOrderFailed, "fail.example.com") - before; got != 1 {
		t.Fatalf("%d failures right after the restart, want 1", got)
	}
	pair, _, _ = e.consul.KV().Get(e.prefix+"failures/fail.example.com", nil)
	var rec2 failureRecord
	_ = json.Unmarshal(pair.Value, &rec2)
	if rec2.Failures != rec.Failures+1 {
		t.Fatalf("failure count went %d -> %d across the restart", rec.Failures, rec2.Failures)
	}
	// Once the challenge is answerable, the next retry succeeds.
	e.sink.mu.Lock()
	delete(e.sink.refuse, "fail.example.com")
	e.sink.mu.Unlock()
	e.sink.waitCert(t, "fail.example.com", 30*time.Second, nil)
	if _, ok := e.sink.cert("ok.example.com"); !ok {
		t.Fatal("ok.example.com lost its certificate")
	}
	waitFor(t, 5*time.Second, "failure record cleared", func() bool {
		p, _, _ := e.consul.KV().Get(e.prefix+"failures/fail.example.com", nil)
		return p == nil
	})
}

// Domains dropped from the stacks stop being served; their records stay for a comeback.
func TestDomainRemovedStopsServing(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	i, _ := e.issuer(t, "s1", nil, nil)
	i.SetDomains([]string{"gone.example.com"})
	e.sink.waitCert(t, "gone.example.com", 60*time.Second, nil)
	i.SetDomains(nil)
	waitFor(t, 5*time.Second, "certificate withdrawn", func() bool { _, ok := e.sink.cert("gone.example.com"); return !ok })
	i.SetDomains([]string{"gone.example.com"})
	e.sink.waitCert(t, "gone.example.com", 5*time.Second, nil)
	if i.Orders() != 1 {
		t.Fatalf("orders = %d, want 1", i.Orders())
	}
	pair, _, _ := e.consul.KV().Get(e.prefix+"certs/gone.example.com", &api.QueryOptions{})
	if pair == nil {
		t.Fatal("record deleted")
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustEvents(e *env) []events.Event {
	evs, _ := e.events.Since(0)
	return evs
}

// The server that orders need not be the one whose proxies the CA reaches: challenges go
// through KV to every server's sink.
func TestChallengeRelayedThroughKV(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	e.issuer(t, "reachable", nil, nil) // serves e.sink, which Pebble validates against; wants nothing
	unreachable := newSink(t)
	i2, _ := e.issuer(t, "orders", unreachable, nil)
	i2.SetDomains([]string{"relay.example.com"})
	c := unreachable.waitCert(t, "relay.example.com", 60*time.Second, nil)
	verifyChain(t, e, c, "relay.example.com")
	e.sink.mu.Lock()
	answered := e.sink.answered[ChallengeHTTP01]
	e.sink.mu.Unlock()
	unreachable.mu.Lock()
	answeredThere := unreachable.answered[ChallengeHTTP01]
	unreachable.mu.Unlock()
	if i2.Orders() != 1 || answered == 0 || answeredThere != 0 {
		t.Fatalf("orders %d, challenges answered by the other server's sink %d, by the ordering server's %d", i2.Orders(), answered, answeredThere)
	}
	// The reachable server does not serve the certificate: it does not want the domain.
	if _, ok := e.sink.cert("relay.example.com"); ok {
		t.Fatal("a server serves a certificate for a domain not in its stacks")
	}
}

// A server that dies holding the lock (its session is never renewed) delays ordering only
// until Consul invalidates its session; then another server orders.
func TestLockHolderDies(t *testing.T) {
	e := newEnv(t, pebbletest.Options{})
	sess, _, err := e.consul.Session().Create(&api.SessionEntry{Name: "dead-server", TTL: "10s", LockDelay: time.Millisecond,
		Behavior: api.SessionBehaviorRelease}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, _, err := e.consul.KV().Acquire(&api.KVPair{Key: e.prefix + "lock", Value: []byte("dead"), Session: sess,
		Flags: api.LockFlagValue}, nil)
	if err != nil || !ok {
		t.Fatalf("taking the lock for the dead server: %v %v", ok, err)
	}
	start := time.Now()
	i, _ := e.issuer(t, "survivor", nil, nil)
	i.SetDomains([]string{"failover.example.com"})
	time.Sleep(3 * time.Second)
	if i.Orders() != 0 {
		t.Fatal("ordered while another server held the lock")
	}
	e.sink.waitCert(t, "failover.example.com", 60*time.Second, nil)
	t.Logf("certificate %s after the holder stopped renewing its 10 s session", time.Since(start).Round(time.Millisecond))
	if i.Orders() != 1 || e.pebble.Issued() != 1 {
		t.Fatalf("orders %d, pebble issued %d", i.Orders(), e.pebble.Issued())
	}
}
