package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/anchor"
	"github.com/nullnet/nullnet/scripts/bench/internal/nnrun"
	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
	"github.com/nullnet/nullnet/scripts/bench/internal/tlsload"
)

// HTTPS load shape, the same for every relay.
const (
	httpsName      = "bench-https.example" // the http service, its Host and its certificate's name
	handshakeConns = 16                    // concurrent clients doing full handshakes
	keepAliveConns = 32                    // kept-alive HTTPS connections sending requests
)

// httpsTarget is one TLS-terminating relay in front of the same plain HTTP backend.
type httpsTarget struct {
	name   string
	addr   string
	relay  *proc.Process
	stop   func()
	broken error
}

// https measures TLS termination: full TLS 1.3 handshakes per second (ECDSA P-256, X25519, no
// resumption) and small requests per second on kept-alive connections, for nullnet's HTTPS
// listener, HAProxy and nginx with the same certificate and backend.
func (b *bench) https(ctx context.Context) error {
	dir := filepath.Join(b.work, "https")
	if err := mkdir(dir); err != nil {
		return err
	}
	backend, err := tlsload.StartBackend(":0")
	if err != nil {
		return fmt.Errorf("https backend: %w", err)
	}
	defer backend.Close()
	_, bp, _ := net.SplitHostPort(backend.Addr())
	backendAddr := "127.0.0.1:" + bp
	// nullnet reads certificates as <certs_dir>/<domain>/{fullchain,privkey}.pem; the anchors
	// get the same files.
	certDir := filepath.Join(dir, "certs", httpsName)
	if err := mkdir(certDir); err != nil {
		return err
	}
	cert, err := tlsload.WriteCertificate(certDir, httpsName)
	if err != nil {
		return err
	}
	for from, to := range map[string]string{cert.CertFile: "fullchain.pem", cert.KeyFile: "privkey.pem"} {
		if err := os.Link(from, filepath.Join(certDir, to)); err != nil {
			return err
		}
	}

	var targets []*httpsTarget
	if !b.o.skip["anchors"] {
		for _, name := range report.Anchors {
			targets = append(targets, b.startTLSAnchor(ctx, name, dir, cert, backendAddr))
		}
	}
	if !b.o.skip["nullnet"] {
		targets = append(targets, b.startHTTPSNullnet(ctx, dir, filepath.Dir(certDir), bp))
	}
	defer func() {
		for _, t := range targets {
			if t.stop != nil {
				t.stop()
			}
		}
	}()
	return rotated(ctx, b.o.runs, targets, func(run int, t *httpsTarget) {
		b.log.Info("measuring HTTPS", "run", run+1, "of", b.o.runs, "target", t.name)
		b.measureHTTPS(ctx, t)
	})
}

func (b *bench) measureHTTPS(ctx context.Context, t *httpsTarget) {
	hs := b.rep.Figure("https_handshake_rate", "HTTPS new handshakes/s (TLS 1.3, P-256, no resumption)", "hs/s", true,
		report.Goal{Against: "best", Ratio: 1.0})
	hsCPU := b.rep.Figure("https_handshake_cpu", "relay CPU per handshake", "µs", false)
	rps := b.rep.Figure("https_keepalive_rps", "HTTPS requests/s, kept-alive connections, 64 B bodies", "req/s", true,
		report.Goal{Against: "best", Ratio: 1.0})
	rpsCPU := b.rep.Figure("https_request_cpu", "relay CPU per HTTPS request", "µs", false)
	rpsP99 := b.rep.Figure("https_request_p99", "HTTPS request p99 (kept alive)", "ms", false)
	if t.broken != nil {
		hs.Fail(t.name, t.broken)
		rps.Fail(t.name, t.broken)
		return
	}
	usage := func() (proc.Usage, error) { return proc.GroupUsage(t.relay.Pid()) }

	pt := &target{name: t.name, relay: t.relay} // for the profiler
	u0, err0 := usage()
	prof := b.startProfile(ctx, pt, "https-handshakes", b.o.duration)
	r := tlsload.Handshakes(ctx, t.addr, httpsName, handshakeConns, b.o.duration)
	u1, err1 := usage()
	if note := prof.finish(ctx); note != "" {
		hs.Note = joinNote(hs.Note, note)
	}
	if r.Ops == 0 || r.Errors > r.Ops/100 {
		hs.Fail(t.name, fmt.Errorf("%d handshakes, %d failed", r.Ops, r.Errors))
	} else {
		hs.Add(t.name, r.Rate())
		if err0 == nil && err1 == nil {
			hsCPU.Add(t.name, cpuPerOp(u1.CPU-u0.CPU, float64(r.Ops)))
		}
	}

	u0, err0 = usage()
	prof = b.startProfile(ctx, pt, "https-requests", b.o.duration)
	r = tlsload.KeepAliveRequests(ctx, t.addr, httpsName, keepAliveConns, b.o.duration)
	u1, err1 = usage()
	if note := prof.finish(ctx); note != "" {
		rps.Note = joinNote(rps.Note, note)
	}
	if r.Ops == 0 || r.Errors > r.Ops/100 {
		rps.Fail(t.name, fmt.Errorf("%d requests, %d connections failed", r.Ops, r.Errors))
	} else {
		rps.Add(t.name, r.Rate())
		rpsP99.Add(t.name, ms(r.P99))
		if err0 == nil && err1 == nil {
			rpsCPU.Add(t.name, cpuPerOp(u1.CPU-u0.CPU, float64(r.Ops)))
		}
	}
}

func (b *bench) startTLSAnchor(ctx context.Context, name, dir string, cert tlsload.Certificate, backend string) *httpsTarget {
	t := &httpsTarget{name: name}
	port, err := proc.FreePort()
	if err != nil {
		t.broken = err
		return t
	}
	t.addr = "127.0.0.1:" + strconv.Itoa(port)
	adir := filepath.Join(dir, name)
	if err := mkdir(adir); err != nil {
		t.broken = err
		return t
	}
	routes := []anchor.TLSRoute{{Listen: t.addr, Backend: backend, CertFile: cert.CertFile, KeyFile: cert.KeyFile, Combined: cert.Combined}}
	o := anchor.Options{Dir: adir, NoFile: int(raiseNoFile())}
	start := anchor.StartHAProxyTLS
	if name == report.Nginx {
		start = anchor.StartNginxTLS
	}
	relay, err := start(ctx, o, routes)
	if err != nil {
		t.broken = err
		b.log.Error("TLS anchor did not start", "anchor", name, "error", err)
		return t
	}
	t.relay, t.stop = relay.Process, func() { relay.Stop(5 * time.Second) }
	return t
}

// startHTTPSNullnet runs the same topology as the other figures (a proxy agent of its own in
// front of an agent -dev holding the server and the host service), with the proxy's HTTPS
// listener on and the server reading the certificate from its certs_dir.
func (b *bench) startHTTPSNullnet(ctx context.Context, dir, certsDir, backendPort string) *httpsTarget {
	t := &httpsTarget{name: report.Nullnet}
	if b.nullnetErr != nil {
		t.broken = fmt.Errorf("nullnet did not relay on loopback: %w", b.nullnetErr)
		return t
	}
	port, err := proc.FreePort()
	if err != nil {
		t.broken = err
		return t
	}
	t.addr = "127.0.0.1:" + strconv.Itoa(port)
	bport, _ := strconv.Atoi(backendPort)
	ndir := filepath.Join(dir, "nullnet")
	if err := mkdir(ndir); err != nil {
		t.broken = err
		return t
	}
	a, err := nnrun.Start(ctx, nnrun.Config{Binary: b.nullnetBin(), ConsulBin: b.o.consulBin, Dir: ndir,
		Services:      []nnrun.Service{{Name: httpsName, Protocol: "http", BackendPort: bport, Timeout: "0"}},
		SeparateProxy: true, HTTPSPort: port, CertsDir: certsDir})
	if err != nil {
		t.broken = err
		return t
	}
	t.relay, t.stop = a.Relay(), a.Stop
	wait := 90 * time.Second
	if b.o.smoke {
		wait = 30 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := a.WaitHealthy(wctx, []string{httpsName}); err != nil {
		t.broken = fmt.Errorf("nullnet https backend: %w", err)
		return t
	}
	for {
		r := tlsload.KeepAliveRequests(wctx, t.addr, httpsName, 1, 200*time.Millisecond)
		if r.Ops > 0 {
			return t
		}
		if wctx.Err() != nil {
			t.broken = fmt.Errorf("nullnet HTTPS listener never answered within %s (agent log: %s)", wait, a.LogTail(600))
			return t
		}
		time.Sleep(200 * time.Millisecond)
	}
}
