package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/anchor"
	"github.com/nullnet/nullnet/scripts/bench/internal/iperf"
	"github.com/nullnet/nullnet/scripts/bench/internal/nnrun"
	"github.com/nullnet/nullnet/scripts/bench/internal/overlaynet"
	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
)

const overlayIperfPort = 5201

// overlay measures TCP throughput across a kernel VXLAN tunnel between two network namespaces:
// direct (client on the proxy host to the service's overlay address) and through each anchor
// running on the proxy host. The client reaches a relay over the proxy host's loopback.
func (b *bench) overlay(ctx context.Context) error {
	topo, err := overlaynet.Build(ctx, strconv.Itoa(os.Getpid()))
	if err != nil {
		return fmt.Errorf("overlay topology: %w", err)
	}
	defer topo.Remove()
	srv, err := iperf.StartServerIn(b.work, topo.Service, overlayIperfPort)
	if err != nil {
		return err
	}
	defer srv.Stop(2 * time.Second)
	backend := overlaynet.ServiceAddr + ":" + strconv.Itoa(overlayIperfPort)

	targets := []*target{{name: report.Direct, addrs: map[string]string{routeIperf: backend}, stop: func() {}}}
	if !b.o.skip["anchors"] {
		for i, name := range []string{report.HAProxy, report.Nginx} {
			t := &target{name: name, addrs: map[string]string{routeIperf: "127.0.0.1:" + strconv.Itoa(16201+i)}, stop: func() {}}
			dir := filepath.Join(b.work, "overlay-"+name)
			opts := anchor.Options{Dir: dir, NoFile: int(raiseNoFile()), Netns: topo.Proxy}
			routes := []anchor.Route{{Protocol: "tcp", Listen: t.addrs[routeIperf], Backend: backend}}
			var relay *anchor.Relay
			if err = mkdir(dir); err == nil {
				if name == report.HAProxy {
					relay, err = anchor.StartHAProxy(ctx, opts, routes)
				} else {
					relay, err = anchor.StartNginx(ctx, opts, routes)
				}
			}
			if err != nil {
				t.broken = err
			} else {
				t.relay, t.stop = relay.Process, func() { relay.Stop(5 * time.Second) }
			}
			targets = append(targets, t)
		}
	}
	if !b.o.skip["nullnet"] {
		targets = append(targets, b.startNullnetIn(ctx, topo, backend))
	}
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()

	// Warm-up doubles as the readiness probe: the relays cannot be dialled from this namespace.
	for _, t := range targets {
		if t.broken != nil {
			continue
		}
		host, port := splitAddr(t.addrs[routeIperf])
		wait := 20 * time.Second
		if t.name == report.Nullnet && !b.o.smoke {
			wait = 60 * time.Second // stack → Consul → port table, and the check must pass
		}
		deadline := time.Now().Add(wait)
		for {
			_, err := iperf.RunIn(ctx, topo.Proxy, host, port, 1, time.Second)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.broken = fmt.Errorf("no iperf3 run across the overlay through %s: %w", t.name, err)
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	return rotated(ctx, b.o.runs, targets, func(run int, t *target) {
		b.log.Info("measuring overlay", "run", run+1, "of", b.o.runs, "target", t.name)
		for _, streams := range b.streams() {
			s := strconv.Itoa(streams)
			thr := b.rep.Figure("overlay_tcp_throughput_"+s, "overlay TCP throughput, "+s+" stream(s)", "Gbit/s", true,
				report.Goal{Against: report.Direct, Ratio: 0.9}, report.Goal{Against: "best", Ratio: 1.0})
			cpu := b.rep.Figure("overlay_tcp_cpu_per_gib_"+s, "overlay relay CPU per GiB, "+s+" stream(s)", "s/GiB", false,
				report.Goal{Against: "best", Ratio: 1.0})
			if t.broken != nil {
				thr.Fail(t.name, t.broken)
				continue
			}
			host, port := splitAddr(t.addrs[routeIperf])
			var u0 proc.Usage
			var uerr error
			if t.relay != nil {
				u0, uerr = proc.GroupUsage(t.relay.Pid())
			}
			r, err := iperf.RunIn(ctx, topo.Proxy, host, port, streams, b.o.duration)
			if err != nil {
				thr.Fail(t.name, err)
				continue
			}
			thr.Add(t.name, r.BitsPerSecond/1e9)
			if t.relay != nil && uerr == nil && r.Bytes > 0 {
				if u1, err := proc.GroupUsage(t.relay.Pid()); err == nil {
					cpu.Add(t.name, (u1.CPU-u0.CPU).Seconds()/(float64(r.Bytes)/(1<<30)))
				}
			}
		}
	})
}

// startNullnetIn runs Consul and `nullnet agent -dev` on the proxy host and a client agent on
// the service host that registers the iperf3 server, advertising its overlay address. With
// network = "direct" the proxy then dials that address: nullnet's relay crosses the same tunnel
// as the anchors. Building tunnels on demand is measured by the control-plane figures.
func (b *bench) startNullnetIn(ctx context.Context, topo *overlaynet.Topology, backend string) *target {
	t := &target{name: report.Nullnet, addrs: map[string]string{routeIperf: "127.0.0.1:16203"}, stop: func() {}}
	if b.nullnetErr != nil {
		t.broken = fmt.Errorf("not attempted: nullnet did not carry traffic on loopback either")
		return t
	}
	if b.o.consulBin == "" {
		t.broken = fmt.Errorf("no Consul binary: run scripts/install-consul or set NULLNET_CONSUL_BIN")
		return t
	}
	dir := filepath.Join(b.work, "overlay-nullnet")
	if err := mkdir(dir); err != nil {
		t.broken = err
		return t
	}
	host, port := splitAddr(backend)
	a, err := nnrun.Start(ctx, nnrun.Config{Binary: b.o.nullnetBin, ConsulBin: b.o.consulBin, Dir: dir, Netns: topo.Proxy,
		Remote:   &nnrun.Remote{Netns: topo.Service, ProxyHostAddr: overlaynet.UnderlayProxy, AdvertiseAddr: host},
		Services: []nnrun.Service{{Name: "bench-iperf", Protocol: "tcp", ListenPort: 16203, BackendPort: port, Timeout: "0"}}})
	if err != nil {
		t.broken = err
		return t
	}
	t.relay, t.stop = a.Process, a.Stop
	return t
}
