package server

import (
	"context"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/acme"
	"github.com/nullnet/nullnet/config"
)

// ACMESinks is where the ACME issuer puts its results on this server: the certificate store
// that WatchCertificates streams to the proxies (certificates under source "acme", and the
// pending challenges).
type ACMESinks interface {
	acme.CertSink
	acme.ChallengeSink
}

// acmeDomains lists the domains that want an ACME certificate: reachable http services with
// acme = true (the service name is the Host, hence the domain).
func acmeDomains(defs []Definition) []string {
	var out []string
	for _, d := range defs {
		if d.Protocol == config.ProtocolHTTP && d.EntryPoint && definitionWantsACME(d) {
			out = append(out, d.Service)
		}
	}
	return out
}

// runACME runs the ACME issuer while ctx lasts (server.acme set, Consul and sinks present),
// feeding it the definitions as they change.
func (s *Server) runACME(ctx context.Context, sinks ACMESinks) {
	s.mu.Lock()
	a := s.agentCfg.Server.ACME
	s.mu.Unlock()
	if a == nil {
		return
	}
	if s.cfg.Consul == nil || sinks == nil {
		s.logger.Warn("server.acme is set but this server has no Consul or certificate store; ACME is off")
		return
	}
	// Failures a CA or DNS can provoke at will are summarised per domain and reason.
	agg := events.NewAggregator(events.AggregatorConfig{Next: s.events, Keys: events.RemoteTriggered})
	defer agg.Stop()
	iss, err := acme.New(acme.Config{
		Consul: s.cfg.Consul, Logger: s.logger, Events: agg, Certs: sinks, Challenges: sinks,
		Email: a.Email, DirectoryURL: a.DirectoryURL, CAFile: a.CAFile, Challenge: a.Challenge,
		RenewBefore: a.RenewBefore, PropagationDelay: s.cfg.ACMEPropagationDelay,
	})
	if err != nil {
		s.logger.Error("ACME is off", "error", err)
		return
	}
	done := make(chan struct{})
	go func() { defer close(done); iss.Run(ctx) }()
	defer func() { <-done }()
	for {
		defs, _, changed := s.defs.All()
		iss.SetDomains(acmeDomains(defs))
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// Definitions arrive in bursts on a reload; one look per burst is enough.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}
