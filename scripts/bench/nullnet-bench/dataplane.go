package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/scripts/bench/internal/anchor"
	"github.com/nullnet/nullnet/scripts/bench/internal/iperf"
	"github.com/nullnet/nullnet/scripts/bench/internal/load"
	"github.com/nullnet/nullnet/scripts/bench/internal/nnrun"
	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
)

// Load shape, the same for every target.
const (
	connWorkers = 16 // concurrent short-connection clients
	udpClients  = 8  // UDP client sockets (= sessions in the relay)
	udpWindow   = 16 // datagrams in flight per client
)

// Route names: each target relays these to the bench's backends.
const (
	routeIperf = "iperf" // TCP, iperf3 server
	routeRR    = "rr"    // TCP, one request / one response / close
	routeRRPP  = "rrpp"  // the same with send_proxy_protocol = "v2" (nullnet only)
	routeEcho  = "echo"  // UDP echo
	routeSink  = "sink"  // UDP, reads only (idle sessions)
	routeFlood = "flood" // UDP echo for the flood figure (short session timeout: its sessions go)
	// The passthrough figure: bulk streams that start with a ClientHello, to a byte sink, through
	// a tls service (routed by SNI) and through a tcp service, in the same run.
	routeStream      = "stream"      // TCP
	routePassthrough = "passthrough" // TLS passthrough; SNI "bench-passthrough"
)

// The flood figure: 50,000 new source addresses, two datagrams each, paced (as in
// TestUDPFloodEstablishedFlow).
const (
	floodSources = 50000
	floodRounds  = 2
	floodRate    = 50000 // datagrams/s
)

// target is one path under test: its addresses for each route and, for a relay, its process group.
type target struct {
	name  string
	addrs map[string]string
	relay *proc.Process // nil for direct
	// control is nullnet's server process (not the relay): its memory per session is noted.
	control *proc.Process
	stop    func()
	broken  error // set when the target could not start: every figure records it
	// admission switches nullnet's UDP new-session limits to the defaults (true) or off.
	admission func(defaults bool) error
}

type bench struct {
	o    options
	log  hclog.Logger
	work string
	rep  *report.Report
	// nullnetErr is why nullnet did not carry traffic on loopback; the overlay variant, same
	// binary, is then not attempted.
	nullnetErr error
	// rrpp is the back end of routeRRPP: it counts the PROXY headers it received.
	rrpp *load.TCPResponder
	// The passthrough figure's ClientHello and byte sinks per route (passthrough.go).
	hello []byte
	sinks map[string]*load.TCPSink
}

// figures of the data plane, with the targets.
func (b *bench) figTCP(streams int) (*report.Figure, *report.Figure) {
	s := strconv.Itoa(streams)
	thr := b.rep.Figure("tcp_throughput_"+s, "TCP throughput, "+s+" stream(s)", "Gbit/s", true,
		report.Goal{Against: report.Direct, Ratio: 0.9}, report.Goal{Against: "best", Ratio: 1.0})
	cpu := b.rep.Figure("tcp_cpu_per_gib_"+s, "relay CPU per GiB, "+s+" stream(s)", "s/GiB", false,
		report.Goal{Against: "best", Ratio: 1.0})
	return thr, cpu
}

func (b *bench) dataPlane(ctx context.Context) error {
	iperfPort, err := proc.FreePort()
	if err != nil {
		return err
	}
	srv, err := iperf.StartServer(ctx, b.work, iperfPort)
	if err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	defer srv.Stop(2 * time.Second)
	// Backends listen on all addresses: nullnet's client reports a loopback-only host service as
	// unreachable (critical), since tunnels deliver to the bridge address. Everyone dials 127.0.0.1.
	rr, err := load.StartTCPResponder(":0")
	if err != nil {
		return err
	}
	defer rr.Close()
	if b.rrpp, err = load.StartProxyProtocolResponder(":0"); err != nil {
		return err
	}
	defer b.rrpp.Close()
	echo, err := load.StartUDPEcho(":0", 2, false)
	if err != nil {
		return err
	}
	defer echo.Close()
	sink, err := load.StartUDPEcho(":0", 1, true)
	if err != nil {
		return err
	}
	defer sink.Close()
	backends := map[string]string{routeIperf: "127.0.0.1:" + strconv.Itoa(iperfPort), routeRR: loopback(rr.Addr()),
		routeRRPP: loopback(b.rrpp.Addr()),
		routeEcho: loopback(echo.Addr()), routeSink: loopback(sink.Addr()), routeFlood: loopback(echo.Addr())}
	if !b.o.skip["passthrough"] {
		stop, err := b.startPassthroughSinks(backends)
		if err != nil {
			return err
		}
		defer stop()
	}

	targets := []*target{{name: report.Direct, addrs: map[string]string{
		routeIperf: backends[routeIperf], routeRR: backends[routeRR], routeEcho: backends[routeEcho],
		routeFlood: backends[routeFlood], routeStream: backends[routeStream]}, stop: func() {}}}
	if !b.o.skip["anchors"] {
		targets = append(targets, b.startAnchor(ctx, report.HAProxy, backends), b.startAnchor(ctx, report.Nginx, backends))
	}
	if !b.o.skip["nullnet"] {
		targets = append(targets, b.startNullnet(ctx, backends))
	}
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()

	if err := rotated(ctx, b.o.runs, targets, func(run int, t *target) {
		b.log.Info("measuring", "run", run+1, "of", b.o.runs, "target", t.name)
		b.measure(ctx, t)
	}); err != nil {
		return err
	}
	b.passthroughNote()
	if !b.o.skip["sessions"] {
		for _, t := range targets {
			if _, ok := t.addrs[routeSink]; ok && ctx.Err() == nil {
				b.idleSessions(ctx, t)
			}
		}
	}
	// After the idle sessions, whose memory figure a flood's churn would distort; they are still
	// open, and main leaves room for the flood's sessions under the open-file limit.
	if !b.o.skip["flood"] {
		_ = rotated(ctx, b.o.runs, targets, func(run int, t *target) { // ctx's end: nothing more to measure
			b.log.Info("measuring the UDP flood", "run", run+1, "of", b.o.runs, "target", t.name)
			b.flood(ctx, t)
		})
	}
	return nil
}

func (b *bench) startAnchor(ctx context.Context, name string, backends map[string]string) *target {
	t := &target{name: name, addrs: map[string]string{}, stop: func() {}}
	var routes []anchor.Route
	for _, r := range []struct{ name, proto string }{{routeRR, "tcp"}, {routeIperf, "tcp"}, {routeEcho, "udp"}, {routeSink, "udp"}, {routeFlood, "udp"}} {
		if name == report.HAProxy && r.proto == "udp" {
			continue // HAProxy has no UDP relay
		}
		port, err := proc.FreePort()
		if err != nil {
			t.broken = err
			return t
		}
		listen := "127.0.0.1:" + strconv.Itoa(port)
		routes = append(routes, anchor.Route{Protocol: r.proto, Listen: listen, Backend: backends[r.name], NoProbe: r.name == routeIperf})
		t.addrs[r.name] = listen
	}
	dir := filepath.Join(b.work, name)
	if err := mkdir(dir); err != nil {
		t.broken = err
		return t
	}
	var relay *anchor.Relay
	var err error
	if name == report.HAProxy {
		relay, err = anchor.StartHAProxy(ctx, anchor.Options{Dir: dir, NoFile: int(raiseNoFile())}, routes)
	} else {
		relay, err = anchor.StartNginx(ctx, anchor.Options{Dir: dir, NoFile: int(raiseNoFile())}, routes)
	}
	if err != nil {
		t.broken = err
		b.log.Error("anchor did not start", "anchor", name, "error", err)
		return t
	}
	t.relay = relay.Process
	t.stop = func() { relay.Stop(5 * time.Second) }
	return t
}

func (b *bench) startNullnet(ctx context.Context, backends map[string]string) *target {
	t := &target{name: report.Nullnet, addrs: map[string]string{}, stop: func() {}}
	if b.o.consulBin == "" {
		t.broken = errors.New("no Consul binary: run scripts/install-consul or set NULLNET_CONSUL_BIN")
		return t
	}
	var svcs []nnrun.Service
	routes := []struct{ name, proto, timeout string }{
		{routeRR, "tcp", "0"}, {routeIperf, "tcp", "0"}, {routeEcho, "udp", "5m"}, {routeSink, "udp", "5m"}, {routeFlood, "udp", "10s"},
		{routeRRAllow, "tcp", "0"}, {routeRRDeny, "tcp", "0"}, {routeRRPP, "tcp", "0"}}
	if _, ok := backends[routePassthrough]; ok {
		routes = append(routes, struct{ name, proto, timeout string }{routeStream, "tcp", "0"},
			struct{ name, proto, timeout string }{routePassthrough, "tls", "0"})
	}
	for _, r := range routes {
		port, err := proc.FreePort()
		if err != nil {
			t.broken = err
			return t
		}
		backend := backends[r.name]
		if r.name == routeRRAllow || r.name == routeRRDeny {
			backend = backends[routeRR]
		}
		_, bp, _ := net.SplitHostPort(backend)
		backendPort, _ := strconv.Atoi(bp)
		svcs = append(svcs, nnrun.Service{Name: "bench-" + r.name, Protocol: r.proto, ListenPort: port, BackendPort: backendPort,
			Timeout: r.timeout, Extra: append(policyExtra(r.name), proxyProtocolExtra(r.name)...)})
		t.addrs[r.name] = "127.0.0.1:" + strconv.Itoa(port)
	}
	dir := filepath.Join(b.work, "nullnet")
	if err := mkdir(dir); err != nil {
		t.broken = err
		return t
	}
	// As deployed: the proxy role in an agent of its own (the ingress host's), the server and
	// the host services in another. The proxy's process is the relay every figure measures.
	b.log.Info("starting Consul, nullnet agent -dev (server, host services) and a proxy agent")
	a, err := nnrun.Start(ctx, nnrun.Config{Binary: b.nullnetBin(), ConsulBin: b.o.consulBin, Dir: dir, Services: svcs,
		SeparateProxy: true})
	if err != nil {
		t.broken = err
		b.log.Error("nullnet did not start", "error", err)
		return t
	}
	t.relay, t.control = a.Relay(), a.Process
	t.stop = a.Stop
	t.admission = a.ProxyAdmission
	// Traffic flows once the stack reached Consul, the port table the proxy, and the host
	// services passed their checks. That is the warm session every figure starts from.
	wait := 90 * time.Second
	if b.o.smoke {
		wait = 30 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	var names []string
	for _, s := range svcs {
		names = append(names, s.Name)
	}
	if err := a.WaitHealthy(wctx, names); err != nil {
		t.broken = fmt.Errorf("nullnet backends: %w", err)
	} else if err := nnrun.WaitTCPRelay(wctx, t.addrs[routeRR], probeRR); err != nil {
		t.broken = fmt.Errorf("nullnet relay never carried traffic within %s: %w (agent log: %s)", wait, err, a.LogTail(600))
	} else if err := nnrun.WaitUDPRelay(wctx, t.addrs[routeEcho]); err != nil {
		t.broken = fmt.Errorf("nullnet UDP relay never echoed within %s: %w (agent log: %s)", wait, err, a.LogTail(600))
	}
	if t.broken != nil {
		b.nullnetErr = t.broken
		b.log.Error("nullnet is not usable", "error", t.broken)
	} else {
		b.log.Info("nullnet relays traffic", "after", time.Since(start).Round(time.Millisecond))
	}
	return t
}

func (b *bench) nullnetBin() string { return b.o.nullnetBin }

func probeRR(addr string) error {
	if err := load.Probe(addr); err != nil {
		return fmt.Errorf("no complete request/response through %s: %w", addr, err)
	}
	return nil
}

// measure takes one sample of every data-plane figure for t.
func (b *bench) measure(ctx context.Context, t *target) {
	if !b.o.skip["tcp"] {
		for _, streams := range b.streams() {
			thr, cpu := b.figTCP(streams)
			if t.broken != nil {
				thr.Fail(t.name, t.broken)
				continue
			}
			host, port := splitAddr(t.addrs[routeIperf])
			u0, uerr := b.usage(t)
			prof := b.startProfile(ctx, t, "tcp"+strconv.Itoa(streams), b.o.duration)
			r, err := iperf.Run(ctx, host, port, streams, b.o.duration)
			if note := prof.finish(ctx); note != "" {
				thr.Note = joinNote(thr.Note, note)
			}
			if err != nil {
				thr.Fail(t.name, err)
				continue
			}
			thr.Add(t.name, r.BitsPerSecond/1e9)
			if u1, err := b.usage(t); t.relay != nil && uerr == nil && err == nil && r.Bytes > 0 {
				cpu.Add(t.name, (u1.CPU-u0.CPU).Seconds()/(float64(r.Bytes)/(1<<30)))
			}
		}
	}
	if !b.o.skip["connrate"] {
		rate := b.rep.Figure("tcp_conn_rate", "TCP connections/s (warm session)", "conn/s", true,
			report.Goal{Against: report.HAProxy, Ratio: 1.0})
		p99 := b.rep.Figure("tcp_conn_p99", "TCP connection p99", "ms", false)
		cpu := b.rep.Figure("tcp_conn_cpu", "relay CPU per connection", "µs", false)
		if t.broken != nil {
			rate.Fail(t.name, t.broken)
		} else {
			u0, uerr := b.usage(t)
			prof := b.startProfile(ctx, t, "connrate", b.o.duration)
			r := load.ConnRate(ctx, t.addrs[routeRR], connWorkers, b.o.duration)
			u1, uerr1 := b.usage(t)
			if note := prof.finish(ctx); note != "" {
				rate.Note = joinNote(rate.Note, note)
			}
			if r.Ops == 0 || r.Errors > r.Ops/100 {
				rate.Fail(t.name, fmt.Errorf("%d connections, %d failed", r.Ops, r.Errors))
			} else {
				rate.Add(t.name, r.Rate())
				p99.Add(t.name, ms(r.P99))
				if uerr == nil && uerr1 == nil {
					cpu.Add(t.name, cpuPerOp(u1.CPU-u0.CPU, float64(r.Ops)))
				}
			}
		}
	}
	if !b.o.skip["connrate"] && !b.o.skip["proxyproto"] {
		b.connRatePP(ctx, t)
	}
	if !b.o.skip["connrate"] && !b.o.skip["policy"] {
		b.allowListRate(ctx, t)
	}
	if !b.o.skip["passthrough"] {
		b.measurePassthrough(ctx, t)
	}
	if !b.o.skip["udp"] {
		for _, size := range []int{64, 1400} {
			s := strconv.Itoa(size)
			pps := b.rep.Figure("udp_rtt_rate_"+s, "UDP round trips/s, "+s+" B", "rt/s", true,
				report.Goal{Against: report.Nginx, Ratio: 1.0})
			p99 := b.rep.Figure("udp_rtt_p99_"+s, "UDP round trip p99, "+s+" B", "ms", false)
			cpu := b.rep.Figure("udp_rtt_cpu_"+s, "relay CPU per UDP round trip, "+s+" B", "µs", false)
			addr, ok := t.addrs[routeEcho]
			switch {
			case !ok:
				continue
			case t.broken != nil:
				pps.Fail(t.name, t.broken)
				continue
			}
			u0, uerr := b.usage(t)
			prof := b.startProfile(ctx, t, "udp"+s, b.o.duration)
			r, err := load.UDPRoundTrips(ctx, addr, udpClients, udpWindow, size, b.o.duration)
			u1, uerr1 := b.usage(t)
			if note := prof.finish(ctx); note != "" {
				pps.Note = joinNote(pps.Note, note)
			}
			if err != nil || r.Ops == 0 {
				pps.Fail(t.name, fmt.Errorf("no round trip completed: %v", err))
				continue
			}
			pps.Add(t.name, r.Rate())
			p99.Add(t.name, ms(r.P99))
			if uerr == nil && uerr1 == nil {
				// The relay's CPU covers the whole run, the count only the measured 90% after
				// warm-up: the rate stands for the whole run.
				cpu.Add(t.name, cpuPerOp(u1.CPU-u0.CPU, r.Rate()*b.o.duration.Seconds()))
			}
		}
	}
}

// flood measures an established UDP client's loss and p99 while 50,000 new source addresses
// flood the same route; nullnet runs it with its default new-session limits.
func (b *bench) flood(ctx context.Context, t *target) {
	p99 := b.rep.Figure("udp_flood_p99", "UDP p99 of an established client, 50,000-source flood", "ms", false,
		report.Goal{Against: report.Direct, Ratio: 1.5})
	lost := b.rep.Figure("udp_flood_lost", "queries lost by that client during the flood", "queries", false,
		report.Goal{Limit: 0})
	addr, ok := t.addrs[routeFlood]
	switch {
	case !ok:
		return
	case t.broken != nil:
		p99.Fail(t.name, t.broken)
		return
	}
	if t.admission != nil {
		if err := t.admission(true); err != nil {
			p99.Fail(t.name, fmt.Errorf("reloading with the default admission limits: %w", err))
			return
		}
		defer func() {
			if err := t.admission(false); err != nil {
				b.log.Error("restoring the bench's admission limits", "error", err)
			}
		}()
	}
	u0, uerr := b.usage(t)
	r, err := load.UDPFlood(ctx, addr, floodSources, floodRounds, floodRate)
	if err != nil {
		p99.Fail(t.name, err)
		return
	}
	p99.Add(t.name, ms(r.P99))
	lost.Add(t.name, float64(r.Lost))
	note := fmt.Sprintf("%s: flood of %d datagrams in %s; client sent %d, lost %d, p50 %s, p99 %s",
		t.name, r.Flooded, r.Took.Round(time.Millisecond), r.Sent, r.Lost, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond))
	if u1, err := b.usage(t); uerr == nil && err == nil {
		note += fmt.Sprintf("; relay RSS %.1f → %.1f MiB", float64(u0.RSSBytes)/(1<<20), float64(u1.RSSBytes)/(1<<20))
	}
	b.rep.Notes = append(b.rep.Notes, note)
}

// idleSessions opens many one-datagram UDP sessions through t and reads the relay's memory,
// scaled to 100,000 sessions when the open-file limit kept the count lower.
func (b *bench) idleSessions(ctx context.Context, t *target) {
	fig := b.rep.Figure("udp_idle_rss", "RSS with 100,000 idle UDP sessions", "MiB", false, report.Goal{Limit: 300})
	if t.broken != nil {
		fig.Fail(t.name, t.broken)
		return
	}
	n := b.o.udpSessions
	u0, err := b.usage(t)
	if err != nil {
		fig.Fail(t.name, err)
		return
	}
	var c0 proc.Usage
	if t.control != nil {
		c0, _ = proc.GroupUsage(t.control.Pid())
	}
	sent, err := load.IdleSessions(ctx, t.addrs[routeEcho], n)
	if err != nil {
		fig.Fail(t.name, err)
		return
	}
	// Every counted session was echoed, so it exists; let the relay settle, then read RSS.
	var u1 proc.Usage
	settle := 10
	if b.o.smoke {
		settle = 2
	}
	for range settle {
		time.Sleep(500 * time.Millisecond)
		if u1, err = b.usage(t); err != nil {
			fig.Fail(t.name, err)
			return
		}
	}
	perSession := float64(u1.RSSBytes-u0.RSSBytes) / float64(sent)
	at100k := (float64(u0.RSSBytes) + perSession*100000) / (1 << 20)
	fig.Add(t.name, at100k)
	note := fmt.Sprintf("%s: %d idle UDP sessions: RSS %.1f → %.1f MiB (%.0f B/session)",
		t.name, sent, float64(u0.RSSBytes)/(1<<20), float64(u1.RSSBytes)/(1<<20), perSession)
	if sent < 100000 {
		why := "open-file limit"
		if b.o.smoke {
			why = "smoke mode"
		}
		note += "; scaled linearly to 100,000 (" + why + ")"
	}
	if t.control != nil {
		if c1, err := proc.GroupUsage(t.control.Pid()); err == nil && c0.RSSBytes > 0 {
			note += fmt.Sprintf("; the server process (not the relay) grew %.1f → %.1f MiB (%.0f B/session)",
				float64(c0.RSSBytes)/(1<<20), float64(c1.RSSBytes)/(1<<20), float64(c1.RSSBytes-c0.RSSBytes)/float64(sent))
		}
	}
	fig.Note = joinNote(fig.Note, note)
	b.rep.Notes = append(b.rep.Notes, note)
}

func (b *bench) usage(t *target) (proc.Usage, error) {
	if t.relay == nil {
		return proc.Usage{}, errors.New("no relay process")
	}
	return proc.GroupUsage(t.relay.Pid())
}

func splitAddr(addr string) (string, int) {
	h, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return h, port
}

// cpuPerOp is CPU time per operation in microseconds.
func cpuPerOp(cpu time.Duration, ops float64) float64 {
	if ops <= 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / ops
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	if strings.Contains(a, b) {
		return a
	}
	return a + "; " + b
}

// loopback turns a wildcard listen address into the 127.0.0.1 address clients dial.
func loopback(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return "127.0.0.1:" + port
}

// streams are the iperf3 stream counts measured; smoke mode keeps one (the code path is the same).
func (b *bench) streams() []int {
	if b.o.smoke {
		return []int{8}
	}
	return []int{1, 8}
}

// proxyProtocolExtra is the stack key of routeRRPP.
func proxyProtocolExtra(route string) []string {
	if route == routeRRPP {
		return []string{`send_proxy_protocol = "v2"`}
	}
	return nil
}

// noHeaderTarget is the plain figure beside the send_proxy_protocol one (JSON results).
const noHeaderTarget = "nullnet without header"

// connRatePP measures the connection rate through a service with send_proxy_protocol = "v2"
// and through the plain one in alternating slices, as allowListRate does, and adds the rates
// and the ratio of each run's pair (goal: 0.97). nullnet only. The back end counts the headers,
// so a proxy that did not send them fails the figure instead of measuring the plain path twice.
func (b *bench) connRatePP(ctx context.Context, t *target) {
	addr, ok := t.addrs[routeRRPP]
	if !ok || t.name != report.Nullnet {
		return
	}
	f := b.rep.Figure("tcp_conn_rate_pp_v2", "TCP connections/s, send_proxy_protocol v2", "conn/s", true)
	ratio := b.rep.Figure("tcp_conn_rate_pp_v2_ratio", "  ratio with/without header, paired per run", "×", true,
		report.Goal{Limit: 0.97})
	cpuFig := b.rep.Figure("tcp_conn_cpu_pp_v2", "relay CPU per connection, send_proxy_protocol v2", "µs", false)
	cpuRatio := b.rep.Figure("tcp_conn_cpu_pp_v2_ratio", "  ratio with/without header, paired per run", "×", false)
	if t.broken != nil {
		f.Fail(report.Nullnet, t.broken)
		return
	}
	before := b.rrpp.ProxyHeaders.Load()
	pr, err := b.pairedConnRate(ctx, t, addr)
	if err != nil {
		f.Fail(report.Nullnet, err)
		return
	}
	if headers := b.rrpp.ProxyHeaders.Load() - before; headers < pr.ops[1] {
		f.Fail(report.Nullnet, fmt.Errorf("the back end got %d PROXY headers for %d connections: the proxy did not send them", headers, pr.ops[1]))
		return
	}
	plain, withHeader := pr.rate(0), pr.rate(1)
	f.Add(report.Nullnet, withHeader)
	f.Add(noHeaderTarget, plain)
	ratio.Add(report.Nullnet, withHeader/plain)
	kv := []any{"with_header", int(withHeader), "without", int(plain), "ratio", fmt.Sprintf("%.3f", withHeader/plain)}
	if pr.cpuOK {
		ch, cp := pr.cpuPerConn(1), pr.cpuPerConn(0)
		cpuFig.Add(report.Nullnet, ch)
		cpuFig.Add(noHeaderTarget, cp)
		cpuRatio.Add(report.Nullnet, ch/cp)
		kv = append(kv, "cpu_us_with_header", fmt.Sprintf("%.1f", ch), "cpu_us_without", fmt.Sprintf("%.1f", cp))
	}
	b.log.Info("send_proxy_protocol connection rate", kv...)
}
