package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nullnet/nullnet/scripts/bench/internal/load"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
)

// The passthrough figure: TLS passthrough (a tls service, routed by the SNI of a ClientHello)
// against nullnet's own TCP relay, same binary, same run, same load: bulk streams that each
// start with a real ClientHello, into a byte sink that checks the ClientHello arrived intact.
// The target is ≥ 0.95× the TCP relay.

// nullnetTCP is the target name under which the TCP relay's samples of this figure are kept
// (not a table column: the note prints it with the ratio).
const nullnetTCP = "nullnet-tcp"

// passthroughSNI is the tls service's name, hence the server name its clients send.
const passthroughSNI = "bench-" + routePassthrough

// startPassthroughSinks starts one sink per route (so that each figure counts only its own
// bytes) and adds their addresses to backends.
func (b *bench) startPassthroughSinks(backends map[string]string) (func(), error) {
	hello, err := load.ClientHello(passthroughSNI)
	if err != nil {
		return nil, err
	}
	b.hello = hello
	b.sinks = map[string]*load.TCPSink{}
	for _, r := range []string{routeStream, routePassthrough} {
		s, err := load.StartTCPSink(":0", hello)
		if err != nil {
			return nil, err
		}
		b.sinks[r] = s
		backends[r] = loopback(s.Addr())
	}
	return func() {
		for _, s := range b.sinks {
			s.Close()
		}
	}, nil
}

func (b *bench) figPassthrough(streams int) *report.Figure {
	s := strconv.Itoa(streams)
	return b.rep.Figure("tls_passthrough_throughput_"+s, "TLS passthrough throughput, "+s+" stream(s)", "Gbit/s", true,
		report.Goal{Against: nullnetTCP, Ratio: 0.95})
}

// measurePassthrough takes one sample of the passthrough figure for t: for nullnet through the
// tls service and through the tcp service, for direct straight into the sink (anchors have no
// such route). nullnet's two are measured A-B-B-A, each leg for half the duration, and each
// sample is the mean of its two halves: on a machine shared with other loads, a drift during the
// run then weighs on both alike, so their ratio within a run is fair.
func (b *bench) measurePassthrough(ctx context.Context, t *target) {
	if b.sinks == nil {
		return
	}
	type leg struct{ name, route string }
	for _, streams := range b.streams() {
		fig := b.figPassthrough(streams)
		var legs []leg
		d := b.o.duration
		switch t.name {
		case report.Nullnet:
			a, c := leg{report.Nullnet, routePassthrough}, leg{nullnetTCP, routeStream}
			if v := fig.Values[report.Nullnet]; v != nil && len(v.Samples)%2 == 1 {
				a, c = c, a
			}
			legs, d = []leg{a, c, c, a}, d/2
		case report.Direct:
			legs = []leg{{report.Direct, routeStream}}
		default:
			continue
		}
		sum, n := map[string]float64{}, map[string]int{}
		failed := map[string]bool{}
		for _, l := range legs {
			if t.broken != nil {
				fig.Fail(l.name, t.broken)
				failed[l.name] = true
				continue
			}
			addr, ok := t.addrs[l.route]
			if !ok {
				fig.Fail(l.name, errors.New("no "+l.route+" route"))
				failed[l.name] = true
				continue
			}
			prof := b.startProfile(ctx, t, "passthrough-"+l.route+strconv.Itoa(streams), d)
			bps, err := load.Stream(ctx, addr, b.hello, streams, d, b.sinks[l.route])
			if note := prof.finish(ctx); note != "" {
				fig.Note = joinNote(fig.Note, note)
			}
			if err != nil {
				fig.Fail(l.name, err)
				failed[l.name] = true
				continue
			}
			sum[l.name] += bps / 1e9
			n[l.name]++
		}
		for name, total := range sum {
			if !failed[name] {
				fig.Add(name, total/float64(n[name]))
			}
		}
	}
}

// passthroughNote prints passthrough vs the TCP relay as a ratio, met or not.
func (b *bench) passthroughNote() {
	if b.sinks == nil {
		return
	}
	for _, streams := range b.streams() {
		fig := b.figPassthrough(streams)
		p, tcp := fig.Values[report.Nullnet], fig.Values[nullnetTCP]
		if p == nil || tcp == nil || len(p.Samples) == 0 || len(tcp.Samples) == 0 {
			continue
		}
		mp, mt := report.Median(p.Samples), report.Median(tcp.Samples)
		// Each run measures the two back to back, so the ratio within a run is the steadier
		// figure on a shared machine: a run slowed by another load slows both.
		var paired []float64
		for i := range min(len(p.Samples), len(tcp.Samples)) {
			if tcp.Samples[i] > 0 {
				paired = append(paired, p.Samples[i]/tcp.Samples[i])
			}
		}
		note := fmt.Sprintf("TLS passthrough, %d stream(s): %.2f Gbit/s vs nullnet's TCP relay %.2f Gbit/s = %.3f× (target ≥ 0.95×); median of the per-run ratios %.3f×; samples passthrough %v, tcp %v",
			streams, mp, mt, mp/mt, report.Median(paired), round2(p.Samples), round2(tcp.Samples))
		fig.Note = joinNote(fig.Note, note)
		b.rep.Notes = append(b.rep.Notes, note)
	}
}

func round2(s []float64) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strconv.FormatFloat(v, 'f', 2, 64)
	}
	return out
}
