package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/load"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
)

// The client-policy figure: the connection rate of a TCP service with an allow-list of 1,000
// CIDRs (the bench client's range last) beside the same service without one, target ≥ 0.97×.
const (
	routeRRAllow = "rr-allow" // rr with the allow-list
	routeRRDeny  = "rr-deny"  // rr denying the bench client: shows that policies reach the proxy
	// noListTarget is the plain figure beside the allow-list one (in the JSON results; the table
	// shows the ratio figures).
	noListTarget = "nullnet without list"
)

// policyExtra are the stack lines of the policy routes (the allow-list: every other /24 of
// 10.0.0.0/8, so that the proxy keeps 1,000 ranges, none merged).
func policyExtra(route string) []string {
	switch route {
	case routeRRAllow:
		l := make([]string, 0, 1000)
		for i := range 999 {
			l = append(l, fmt.Sprintf("%q", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 7), byte(i << 1), 0}), 24)))
		}
		l = append(l, `"127.0.0.0/8"`)
		return []string{"allow = [" + strings.Join(l, ", ") + "]"}
	case routeRRDeny:
		return []string{`deny = ["127.0.0.0/8", "::1"]`}
	}
	return nil
}

// allowListSlices is how many alternating slices each run of the allow-list figure takes per
// route: on a shared machine the load of other processes drifts during a run, and alternating
// one-second slices of both routes lets the drift fall on both alike.
const allowListSlices = 5

// allowListRate measures the allow-list route and the plain route in alternating slices and
// adds both rates (the plain one as noListTarget).
func (b *bench) allowListRate(ctx context.Context, t *target) {
	addr, ok := t.addrs[routeRRAllow]
	if !ok || t.name != report.Nullnet {
		return
	}
	// The rates and CPU times are shown beside their plain twins; the goals are on the ratios of
	// each run's paired slices (a median of ratios: on a shared machine the medians of two
	// separate series may come from different runs).
	f := b.rep.Figure("tcp_conn_rate_allow_list", "TCP connections/s, allow-list of 1,000 CIDRs", "conn/s", true)
	ratio := b.rep.Figure("tcp_conn_rate_allow_list_ratio", "  ratio with/without list, paired per run", "×", true,
		report.Goal{Limit: 0.97})
	if t.broken != nil {
		f.Fail(report.Nullnet, t.broken)
		return
	}
	if err := load.Probe(t.addrs[routeRRDeny]); err == nil {
		f.Fail(report.Nullnet, errors.New("a service denying the bench client served it: client policies do not reach this proxy (a port table without policies)"))
		return
	}
	// The relay's CPU per connection is the steadier figure on a shared machine: other
	// processes take the relay's time slices, not its work per connection.
	cpuFig := b.rep.Figure("tcp_conn_cpu_allow_list", "relay CPU per connection, allow-list of 1,000 CIDRs", "µs", false)
	cpuRatio := b.rep.Figure("tcp_conn_cpu_allow_list_ratio", "  ratio with/without list, paired per run", "×", false,
		report.Goal{Limit: 1.03})
	pr, err := b.pairedConnRate(ctx, t, addr)
	if err != nil {
		f.Fail(report.Nullnet, err)
		return
	}
	plain, listed := pr.rate(0), pr.rate(1)
	f.Add(report.Nullnet, listed)
	f.Add(noListTarget, plain)
	ratio.Add(report.Nullnet, listed/plain)
	kv := []any{"with_list", int(listed), "without", int(plain), "ratio", fmt.Sprintf("%.3f", listed/plain)}
	if pr.cpuOK {
		cl, cp := pr.cpuPerConn(1), pr.cpuPerConn(0)
		cpuFig.Add(report.Nullnet, cl)
		cpuFig.Add(noListTarget, cp)
		cpuRatio.Add(report.Nullnet, cl/cp)
		kv = append(kv, "cpu_us_with_list", fmt.Sprintf("%.1f", cl), "cpu_us_without", fmt.Sprintf("%.1f", cp))
	}
	b.log.Info("allow-list connection rate", kv...)
}

// pairedConns is what pairedConnRate measured: index 0 the plain route, 1 the other.
type pairedConns struct {
	ops   [2]int64
	secs  [2]float64
	cpu   [2]time.Duration
	cpuOK bool
}

func (p pairedConns) rate(i int) float64       { return float64(p.ops[i]) / p.secs[i] }
func (p pairedConns) cpuPerConn(i int) float64 { return cpuPerOp(p.cpu[i], float64(p.ops[i])) }

// pairedConnRate measures the connection rate and the relay's CPU through the plain route and
// through addr in alternating slices (plain, other, other, plain, ...: neither always first), so
// that both see the same moments of a shared machine. A slice with more than 1% failed
// connections is an error.
func (b *bench) pairedConnRate(ctx context.Context, t *target, addr string) (pairedConns, error) {
	slice := max(time.Second, b.o.duration/allowListSlices)
	p := pairedConns{cpuOK: true}
	for i := range 2 * allowListSlices {
		which := (i + i/2) % 2
		route := []string{t.addrs[routeRR], addr}[which]
		u0, err0 := b.usage(t)
		r := load.ConnRate(ctx, route, connWorkers, slice)
		u1, err1 := b.usage(t)
		if r.Ops == 0 || r.Errors > r.Ops/100 {
			return p, fmt.Errorf("%s: %d connections, %d failed", route, r.Ops, r.Errors)
		}
		p.ops[which] += r.Ops
		p.secs[which] += r.Elapsed.Seconds()
		if err0 != nil || err1 != nil {
			p.cpuOK = false
		}
		p.cpu[which] += u1.CPU - u0.CPU
	}
	return p, nil
}
