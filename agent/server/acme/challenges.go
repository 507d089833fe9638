package acme

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	"github.com/hashicorp/consul/api"
)

// Challenges go through KV, not straight into this server's sink: a proxy follows one server,
// which need not be the one ordering, so every server's watch must serve them.

type httpProvider struct{ i *Issuer }

func (p httpProvider) Present(ctx context.Context, domain, token, keyAuth string) error {
	return p.i.presentChallenge(ctx, httpChalDir+token, []byte(keyAuth), func(st kvState) bool {
		return st.http[token] == keyAuth
	})
}

func (p httpProvider) CleanUp(ctx context.Context, domain, token, keyAuth string) error {
	return p.i.clearChallenge(httpChalDir + token)
}

type tlsALPNProvider struct{ i *Issuer }

func (p tlsALPNProvider) Present(ctx context.Context, domain, token, keyAuth string) error {
	certPEM, keyPEM, err := tlsalpn01.ChallengeBlocks(domain, keyAuth)
	if err != nil {
		return err
	}
	rec := tlsALPNRecord{CertPEM: string(certPEM), KeyPEM: string(keyPEM)}
	raw, _ := json.Marshal(rec)
	return p.i.presentChallenge(ctx, tlsALPNChalDr+domain, raw, func(st kvState) bool {
		return st.tlsALPN[domain] == rec
	})
}

func (p tlsALPNProvider) CleanUp(ctx context.Context, domain, token, keyAuth string) error {
	return p.i.clearChallenge(tlsALPNChalDr + domain)
}

// presentChallenge stores a challenge, waits until this server's own watch serves it (so the
// write has gone round Consul), then gives the other servers PropagationDelay to do the same.
func (i *Issuer) presentChallenge(ctx context.Context, rel string, value []byte, served func(kvState) bool) error {
	if _, err := i.cfg.Consul.KV().Put(&api.KVPair{Key: i.cfg.Prefix + rel, Value: value}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("store challenge: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		i.mu.Lock()
		ok := served(i.kv)
		i.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("challenge stored but not seen back from Consul within 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(i.cfg.PropagationDelay):
		return nil
	}
}

// clearChallenge removes a challenge once the order is done with it (lego calls CleanUp after
// every validation, failed or not). It must run even when the order's context has ended.
func (i *Issuer) clearChallenge(rel string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := i.cfg.Consul.KV().Delete(i.cfg.Prefix+rel, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("clear challenge: %w", err)
	}
	return nil
}

// user adapts an account record to lego's registration.User.
func (a *accountRecord) user() (*acmeUser, error) {
	key, err := certcrypto.ParsePEMPrivateKey([]byte(a.KeyPEM))
	if err != nil {
		return nil, fmt.Errorf("account key: %w", err)
	}
	return &acmeUser{email: a.Email, reg: a.Registration, key: key}, nil
}

type acmeUser struct {
	email string
	reg   *acme.ExtendedAccount
	key   crypto.Signer
}

func (u *acmeUser) GetEmail() string                       { return u.email }
func (u *acmeUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *acmeUser) GetPrivateKey() crypto.Signer           { return u.key }
