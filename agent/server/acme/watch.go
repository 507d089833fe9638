package acme

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul"
)

// kvState is one reading of the prefix.
type kvState struct {
	certs   map[string]*certRecord // valid records by domain
	http    map[string]string      // token -> key authorization
	tlsALPN map[string]tlsALPNRecord
	fails   map[string]failureRecord
}

// parseKV sorts a listing of the prefix into records; invalid ones are logged and left out.
func (i *Issuer) parseKV(pairs api.KVPairs) kvState {
	st := kvState{certs: map[string]*certRecord{}, http: map[string]string{}, tlsALPN: map[string]tlsALPNRecord{},
		fails: map[string]failureRecord{}}
	for _, p := range pairs {
		rel := strings.TrimPrefix(p.Key, i.cfg.Prefix)
		switch {
		case strings.HasPrefix(rel, certsDir):
			d := strings.TrimPrefix(rel, certsDir)
			r, err := decodeCert(d, p.Value)
			if err != nil {
				i.warnOnce("cert:"+d+":"+err.Error(), "ignoring a stored ACME certificate", "key", p.Key, "error", err)
				continue
			}
			st.certs[d] = r
		case strings.HasPrefix(rel, failuresDir):
			var r failureRecord
			if len(p.Value) <= 4096 && json.Unmarshal(p.Value, &r) == nil {
				st.fails[strings.TrimPrefix(rel, failuresDir)] = r
			}
		case strings.HasPrefix(rel, httpChalDir):
			if len(p.Value) <= 4096 {
				st.http[strings.TrimPrefix(rel, httpChalDir)] = string(p.Value)
			}
		case strings.HasPrefix(rel, tlsALPNChalDr):
			var r tlsALPNRecord
			if len(p.Value) <= maxRecord && json.Unmarshal(p.Value, &r) == nil {
				st.tlsALPN[strings.TrimPrefix(rel, tlsALPNChalDr)] = r
			}
		}
	}
	return st
}

// watchKV follows the prefix with blocking queries and applies every change.
func (i *Issuer) watchKV(ctx context.Context) {
	kv := i.cfg.Consul.KV()
	query := func(ctx context.Context, index uint64, wait time.Duration) (api.KVPairs, uint64, error) {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
		pairs, meta, err := kv.List(i.cfg.Prefix, q)
		if err != nil {
			return nil, 0, err
		}
		return pairs, meta.LastIndex, nil
	}
	consul.Watch(ctx, consul.WatchConfig{Name: "acme state", Logger: i.logger}, query,
		func(pairs api.KVPairs, _ uint64) { i.apply(i.parseKV(pairs)) })
}

// apply installs a reading: challenges are diffed into the ChallengeSink, certificates of the
// wanted domains go to the CertSink, and the issuer loop is woken.
func (i *Issuer) apply(st kvState) {
	i.sinkMu.Lock()
	defer i.sinkMu.Unlock()
	i.mu.Lock()
	prev := i.kv
	i.kv = st
	i.loaded = true
	certs := i.wantedCertsLocked()
	changed := !maps.EqualFunc(certs, i.published, func(a, b Certificate) bool {
		return a.NotAfter.Equal(b.NotAfter) && string(a.CertPEM) == string(b.CertPEM)
	})
	if changed {
		i.published = certs
	}
	i.mu.Unlock()

	for tok, ka := range st.http {
		if prev.http[tok] != ka {
			i.cfg.Challenges.SetHTTPChallenge(tok, ka)
		}
	}
	for tok := range prev.http {
		if _, ok := st.http[tok]; !ok {
			i.cfg.Challenges.ClearHTTPChallenge(tok)
		}
	}
	for d, r := range st.tlsALPN {
		if prev.tlsALPN[d] != r {
			i.cfg.Challenges.SetTLSALPNChallenge(d, []byte(r.CertPEM), []byte(r.KeyPEM))
		}
	}
	for d := range prev.tlsALPN {
		if _, ok := st.tlsALPN[d]; !ok {
			i.cfg.Challenges.ClearTLSALPNChallenge(d)
		}
	}
	if changed {
		i.cfg.Certs.SetSource(Source, certs)
	}
	i.kick()
}

// wantedCertsLocked is the set to serve: stored certificates of the domains in the stacks.
// Records of domains no longer wanted stay in KV (a service put back gets its certificate at
// once) but are not served.
func (i *Issuer) wantedCertsLocked() map[string]Certificate {
	out := make(map[string]Certificate, len(i.domains))
	for d := range i.domains {
		if r := i.kv.certs[d]; r != nil {
			out[d] = Certificate{CertPEM: []byte(r.CertPEM), KeyPEM: []byte(r.KeyPEM), NotAfter: r.NotAfter}
		}
	}
	return out
}

// republish pushes the wanted set after the domain set changed.
func (i *Issuer) republish() {
	i.sinkMu.Lock()
	defer i.sinkMu.Unlock()
	i.mu.Lock()
	if !i.loaded {
		i.mu.Unlock()
		return
	}
	certs := i.wantedCertsLocked()
	i.published = certs
	i.mu.Unlock()
	i.cfg.Certs.SetSource(Source, certs)
}

// warnOnce logs a message once per key (bounded), so a bad record does not log on every change.
func (i *Issuer) warnOnce(key, msg string, args ...any) {
	i.mu.Lock()
	_, seen := i.warned[key]
	if !seen && len(i.warned) < 1024 {
		i.warned[key] = struct{}{}
	}
	i.mu.Unlock()
	if !seen {
		i.logger.Warn(msg, args...)
	}
}
