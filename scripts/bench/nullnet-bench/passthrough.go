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
// tls service and through the tcp service (alternating which goes first), for direct straight
// into the sink. Anchors have no such route.
func (b *bench) measurePassthrough(ctx context.Context, t *target) {
	if b.sinks == nil {
		return
	}
	for _, streams := range b.streams() {
		fig := b.figPassthrough(streams)
		type leg struct{ name, route string }
		var legs []leg
		switch {
		case t.name == report.Nullnet:
			legs = []leg{{report.Nullnet, routePassthrough}, {nullnetTCP, routeStream}}
			if v := fig.Values[report.Nullnet]; v != nil && len(v.Samples)%2 == 1 {
				legs[0], legs[1] = legs[1], legs[0]
			}
		case t.name == report.Direct:
			legs = []leg{{report.Direct, routeStream}}
		default:
			continue
		}
		for _, l := range legs {
			if t.broken != nil {
				fig.Fail(l.name, t.broken)
				continue
			}
			addr, ok := t.addrs[l.route]
			if !ok {
				fig.Fail(l.name, errors.New("no "+l.route+" route"))
				continue
			}
			prof := b.startProfile(ctx, t, "passthrough-"+l.route+strconv.Itoa(streams), b.o.duration)
			bps, err := load.Stream(ctx, addr, b.hello, streams, b.o.duration, b.sinks[l.route])
			if note := prof.finish(ctx); note != "" {
				fig.Note = joinNote(fig.Note, note)
			}
			if err != nil {
				fig.Fail(l.name, err)
				continue
			}
			fig.Add(l.name, bps/1e9)
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
		note := fmt.Sprintf("TLS passthrough, %d stream(s): %.2f Gbit/s vs nullnet's TCP relay %.2f Gbit/s = %.3f× (target ≥ 0.95×); samples passthrough %v, tcp %v",
			streams, mp, mt, mp/mt, round2(p.Samples), round2(tcp.Samples))
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
