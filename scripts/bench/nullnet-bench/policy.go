package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/nullnet/nullnet/scripts/bench/internal/load"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
)

// The client-policy figure: the connection rate of a TCP service with an allow-list of 1,000
// CIDRs (the bench client's range last) beside the same service without one, target ≥ 0.97×.
const (
	routeRRAllow = "rr-allow" // rr with the allow-list
	routeRRDeny  = "rr-deny"  // rr denying the bench client: shows that policies reach the proxy
	// noListTarget is the plain figure beside the allow-list one (not a column of the table: the
	// verdict prints the ratio).
	noListTarget = "nullnet without list"
)

// policyExtra are the stack lines of the policy routes.
func policyExtra(route string) []string {
	switch route {
	case routeRRAllow:
		l := make([]string, 0, 1000)
		for i := range 999 {
			l = append(l, fmt.Sprintf("%q", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)))
		}
		l = append(l, `"127.0.0.0/8"`)
		return []string{"allow = [" + strings.Join(l, ", ") + "]"}
	case routeRRDeny:
		return []string{`deny = ["127.0.0.0/8", "::1"]`}
	}
	return nil
}

// allowListRate measures the allow-list route right after the plain connection rate (plain)
// of the same run.
func (b *bench) allowListRate(ctx context.Context, t *target, plain float64) {
	addr, ok := t.addrs[routeRRAllow]
	if !ok || t.name != report.Nullnet {
		return
	}
	f := b.rep.Figure("tcp_conn_rate_allow_list", "TCP connections/s, allow-list of 1,000 CIDRs", "conn/s", true,
		report.Goal{Against: noListTarget, Ratio: 0.97})
	if err := load.Probe(t.addrs[routeRRDeny]); err == nil {
		f.Fail(report.Nullnet, errors.New("a service denying the bench client served it: client policies do not reach this proxy (a port table without policies)"))
		return
	}
	r := load.ConnRate(ctx, addr, connWorkers, b.o.duration)
	if r.Ops == 0 || r.Errors > r.Ops/100 {
		f.Fail(report.Nullnet, fmt.Errorf("%d connections, %d failed", r.Ops, r.Errors))
		return
	}
	f.Add(report.Nullnet, r.Rate())
	f.Add(noListTarget, plain)
	b.log.Info("allow-list connection rate", "with_list", int(r.Rate()), "without", int(plain), "ratio", fmt.Sprintf("%.3f", r.Rate()/plain))
}
