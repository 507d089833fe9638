package acme

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"
	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/events"
)

// Issuer keeps a certificate for every wanted domain. One per server; see the package comment.
type Issuer struct {
	cfg    Config
	logger hclog.Logger
	wake   chan struct{}

	sinkMu sync.Mutex // serialises calls into the sinks, in the order of the readings

	mu        sync.Mutex
	domains   map[string]struct{}
	kv        kvState
	loaded    bool // the first KV reading has been applied: nothing is ordered before it
	published map[string]Certificate
	warned    map[string]struct{}
	backoff   map[string]*retryState

	// Owned by the issuing goroutine.
	account *accountRecord
	client  *lego.Client

	orders atomic.Int64 // orders started by this issuer (tests, metrics)
}

type retryState struct {
	failures int
	next     time.Time
	reason   string
}

var legoLogOnce sync.Once

// New builds an Issuer; Run starts it.
func New(cfg Config) (*Issuer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	logger := cfg.Logger.Named("acme")
	legoLogOnce.Do(func() {
		// lego logs through a process-wide slog logger; send its warnings to ours.
		w := logger.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Info})
		legolog.SetDefault(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})))
	})
	return &Issuer{cfg: cfg, logger: logger, wake: make(chan struct{}, 1), domains: map[string]struct{}{},
		warned: map[string]struct{}{}, backoff: map[string]*retryState{}}, nil
}

// SetDomains replaces the set of domains to keep certificates for (the reachable http services
// with acme = true). Invalid names are logged and skipped.
func (i *Issuer) SetDomains(domains []string) {
	want := make(map[string]struct{}, len(domains))
	for _, d := range domains {
		if err := validDomain(d); err != nil {
			i.warnOnce("domain:"+d, "not ordering a certificate for an invalid domain", "domain", d, "error", err)
			continue
		}
		want[d] = struct{}{}
	}
	i.mu.Lock()
	same := len(want) == len(i.domains)
	for d := range want {
		if _, ok := i.domains[d]; !ok {
			same = false
		}
	}
	i.domains = want
	i.mu.Unlock()
	if !same {
		i.republish()
		i.kick()
	}
}

// Orders reports how many orders this issuer has started.
func (i *Issuer) Orders() int64 { return i.orders.Load() }

func (i *Issuer) kick() {
	select {
	case i.wake <- struct{}{}:
	default:
	}
}

// Run watches the KV prefix and orders what is due until ctx ends; it returns after its
// goroutines have ended.
func (i *Issuer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); i.watchKV(ctx) }()
	defer wg.Wait()

	lockFailures := 0
	for {
		due, next := i.plan(time.Now())
		if len(due) > 0 {
			switch held, err := i.issueUnderLock(ctx, due); {
			case err != nil:
				lockFailures++
				d := consul.Backoff(lockFailures, time.Minute)
				i.logger.Warn("cannot take the ACME lock", "error", err, "retry_in", d)
				next = time.Now().Add(d)
			case !held:
				// Another server is ordering; its writes to KV wake us, LockRetry covers a
				// holder that died.
				lockFailures = 0
				next = time.Now().Add(i.cfg.LockRetry)
			default:
				lockFailures = 0
				continue // look again at once: the plan changed
			}
		}
		wait := time.Until(next)
		if next.IsZero() || wait > i.cfg.CheckInterval {
			wait = i.cfg.CheckInterval
		}
		t := time.NewTimer(max(wait, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-i.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// plan lists the domains to order now (sorted) and the earliest time another becomes due.
func (i *Issuer) plan(now time.Time) (due []string, next time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.loaded {
		return nil, time.Time{}
	}
	for d := range i.domains {
		r := i.kv.certs[d]
		at := now
		if !renewalDue(r, i.cfg.DirectoryURL, now, i.cfg.RenewBefore) {
			at = renewAt(r, i.cfg.RenewBefore)
		}
		if b := i.backoff[d]; b != nil && b.next.After(at) {
			at = b.next
		}
		if f, ok := i.kv.fails[d]; ok && f.NextAttempt.After(at) && f.NextAttempt.Before(now.Add(i.cfg.RetryMax+time.Minute)) {
			at = f.NextAttempt // another server's (or our former self's) backoff; capped against clock skew or a hand edit
		}
		if !at.After(now) {
			due = append(due, d)
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	sort.Strings(due)
	return due, next
}

// issueUnderLock takes the Consul lock (one try) and orders each due domain that is still due
// once re-read under the lock. held reports whether the lock was obtained.
func (i *Issuer) issueUnderLock(ctx context.Context, due []string) (held bool, err error) {
	lock, err := i.cfg.Consul.LockOpts(&api.LockOptions{
		Key: i.cfg.Prefix + lockKey, SessionName: "nullnet-acme", SessionTTL: "10s",
		LockTryOnce: true, LockWaitTime: time.Second,
	})
	if err != nil {
		return false, err
	}
	lost, err := lock.Lock(ctx.Done())
	if err != nil || lost == nil {
		return false, err
	}
	defer func() {
		if err := lock.Unlock(); err != nil && err != api.ErrLockNotHeld {
			i.logger.Warn("releasing the ACME lock", "error", err)
		}
	}()
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			cancel() // the session expired: stop ordering, another server may take over
		case <-lctx.Done():
		}
	}()
	for _, d := range due {
		if lctx.Err() != nil {
			break
		}
		i.issueOne(lctx, d)
	}
	return true, nil
}

// issueOne orders one domain unless KV (read consistently, under the lock) shows another
// server has just done it.
func (i *Issuer) issueOne(ctx context.Context, domain string) {
	kv := i.cfg.Consul.KV()
	pair, _, err := kv.Get(i.cfg.Prefix+certsDir+domain, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		i.failed(domain, fmt.Errorf("read stored certificate: %w", err))
		return
	}
	var prev *certRecord
	if pair != nil {
		if prev, err = decodeCert(domain, pair.Value); err != nil {
			prev = nil
		}
	}
	if !renewalDue(prev, i.cfg.DirectoryURL, time.Now(), i.cfg.RenewBefore) {
		i.logger.Debug("certificate already stored by another server", "domain", domain)
		i.mu.Lock()
		i.kv.certs[domain] = prev // ahead of our watch, so the next plan does not ask again
		i.mu.Unlock()
		return
	}
	i.orders.Add(1)
	start := time.Now()
	rec, err := i.order(ctx, domain)
	if err != nil {
		if ctx.Err() != nil {
			// Shutting down, or the lock was lost: not the domain's fault, no backoff.
			i.logger.Info("ACME order interrupted", "domain", domain, "error", err)
			return
		}
		i.failed(domain, err)
		return
	}
	raw, _ := json.Marshal(rec)
	if _, err := kv.Put(&api.KVPair{Key: i.cfg.Prefix + certsDir + domain, Value: raw}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		i.failed(domain, fmt.Errorf("store certificate: %w", err))
		return
	}
	i.mu.Lock()
	delete(i.backoff, domain)
	delete(i.kv.fails, domain)
	i.kv.certs[domain] = rec // the watch brings it too; planning must not wait for it
	i.mu.Unlock()
	// Always: our view of failures/ may lag the write of the last failure.
	if _, err := kv.Delete(i.cfg.Prefix+failuresDir+domain, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		i.logger.Warn("clearing the failure record", "domain", domain, "error", err)
	}
	result := "renewed"
	if prev == nil {
		result = "issued"
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "acme", "orders"}, 1, []metrics.Label{{Name: "result", Value: result}})
	metrics.MeasureSince([]string{"nullnet", "server", "acme", "order_duration"}, start)
	if prev == nil {
		// First certificate: every server's certificate store reports certificate_installed
		// when the record reaches it through KV.
		i.logger.Info("certificate issued", "domain", domain, "not_after", rec.NotAfter, "duration", time.Since(start).Round(time.Millisecond))
		return
	}
	i.logger.Info("certificate renewed", "domain", domain, "not_after", rec.NotAfter, "duration", time.Since(start).Round(time.Millisecond))
	i.cfg.Events.Emit(events.Event{Kind: events.CertificateRenewed, Severity: events.Info,
		Message: fmt.Sprintf("ACME certificate for %s renewed", domain),
		Fields:  map[string]string{"domain": domain, "not_after": rec.NotAfter.UTC().Format(time.RFC3339), "source": Source}})
}

// failed records a failed order: backoff for the domain and one (aggregated) event.
func (i *Issuer) failed(domain string, err error) {
	reason := err.Error()
	if len(reason) > 512 {
		reason = reason[:512] + "…"
	}
	i.mu.Lock()
	b := i.backoff[domain]
	if b == nil {
		b = &retryState{}
		i.backoff[domain] = b
	}
	// Count on from what any server recorded, so the backoff is one for the cluster.
	b.failures = max(b.failures, i.kv.fails[domain].Failures) + 1
	d := retryDelay(b.failures, i.cfg.RetryMin, i.cfg.RetryMax)
	b.next = time.Now().Add(d)
	b.reason = reason
	n := b.failures
	rec := failureRecord{Failures: n, NextAttempt: b.next.UTC(), Reason: reason}
	i.mu.Unlock()
	raw, _ := json.Marshal(rec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := i.cfg.Consul.KV().Put(&api.KVPair{Key: i.cfg.Prefix + failuresDir + domain, Value: raw}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		i.logger.Warn("storing the failure record (the backoff stays local)", "domain", domain, "error", err)
	}
	cancel()
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "acme", "orders"}, 1, []metrics.Label{{Name: "result", Value: "failed"}})
	i.logger.Warn("ACME order failed", "domain", domain, "error", reason, "failures", n, "retry_in", d.Round(time.Millisecond))
	i.cfg.Events.Emit(events.Event{Kind: events.ACMEOrderFailed, Severity: events.Warning,
		Message: fmt.Sprintf("ACME order for %s failed (attempt %d); retrying in %s", domain, n, d.Round(time.Second)),
		Fields:  map[string]string{"domain": domain, "reason": reason}})
}

// retryDelay is the wait after n failures in a row: doubling from lo, capped at hi, with the
// project's jitter.
func retryDelay(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for k := 1; k < n && d < hi; k++ {
		d *= 2
	}
	d = min(d, hi)
	// Jitter in [d/2, d) as consul.Backoff does, so servers' retries do not line up.
	return d/2 + rand.N(d/2+1)
}

// order runs one ACME order for domain and returns the record to store.
func (i *Issuer) order(ctx context.Context, domain string) (*certRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, i.cfg.OrderTimeout)
	defer cancel()
	client, err := i.legoClient(ctx)
	if err != nil {
		return nil, err
	}
	res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{
		Domains: []string{domain}, Bundle: true, KeyType: certcrypto.EC256,
	})
	if err != nil {
		return nil, err
	}
	rec := &certRecord{Domain: domain, CertPEM: string(res.Certificate), KeyPEM: string(res.PrivateKey),
		IssuedAt: time.Now().UTC(), DirectoryURL: i.cfg.DirectoryURL, CertURL: res.CertURL}
	raw, _ := json.Marshal(rec)
	checked, err := decodeCert(domain, raw)
	if err != nil {
		return nil, fmt.Errorf("the CA returned an unusable certificate: %w", err)
	}
	return checked, nil
}

// legoClient returns a client with a registered account, loading the account from KV or
// registering (and storing) a new one. Called under the lock only.
func (i *Issuer) legoClient(ctx context.Context) (*lego.Client, error) {
	if i.client != nil {
		return i.client, nil
	}
	acct, err := i.loadOrCreateAccount(ctx)
	if err != nil {
		return nil, err
	}
	i.account = acct
	client, err := i.newClient(acct)
	if err != nil {
		return nil, err
	}
	i.client = client
	return client, nil
}

func (i *Issuer) newClient(acct *accountRecord) (*lego.Client, error) {
	u, err := acct.user()
	if err != nil {
		return nil, err
	}
	lc := lego.NewConfig(u)
	lc.CADirURL = i.cfg.DirectoryURL
	lc.HTTPClient = i.cfg.HTTPClient
	lc.UserAgent = "nullnet"
	lc.Certificate.Timeout = i.cfg.OrderTimeout
	client, err := lego.NewClient(lc)
	if err != nil {
		return nil, fmt.Errorf("acme client: %w", err)
	}
	if i.cfg.Challenge == ChallengeTLSALPN01 {
		err = client.Challenge.SetTLSALPN01Provider(tlsALPNProvider{i})
	} else {
		err = client.Challenge.SetHTTP01Provider(httpProvider{i})
	}
	if err != nil {
		return nil, err
	}
	return client, nil
}

func (i *Issuer) loadOrCreateAccount(ctx context.Context) (*accountRecord, error) {
	kv := i.cfg.Consul.KV()
	key := i.cfg.Prefix + accountsDir + accountID(i.cfg.DirectoryURL)
	pair, _, err := kv.Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read ACME account: %w", err)
	}
	if pair != nil {
		var a accountRecord
		if err := json.Unmarshal(pair.Value, &a); err == nil && a.Registration != nil {
			if _, err := a.user(); err == nil {
				return &a, nil
			}
		}
		i.logger.Warn("stored ACME account is unusable; registering a new one", "key", key)
	}
	priv, err := certcrypto.GeneratePrivateKey(certcrypto.EC256)
	if err != nil {
		return nil, err
	}
	a := &accountRecord{Email: i.cfg.Email, DirectoryURL: i.cfg.DirectoryURL, KeyPEM: string(certcrypto.PEMEncode(priv))}
	c, err := i.newClient(a)
	if err != nil {
		return nil, err
	}
	reg, err := c.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		return nil, fmt.Errorf("register ACME account: %w", err)
	}
	a.Registration = reg
	raw, _ := json.Marshal(a)
	if _, err := kv.Put(&api.KVPair{Key: key, Value: raw}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("store ACME account: %w", err)
	}
	i.logger.Info("registered ACME account", "directory", i.cfg.DirectoryURL, "account", reg.Location)
	return a, nil
}
