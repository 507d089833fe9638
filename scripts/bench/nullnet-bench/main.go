// Command nullnet-bench is `make bench`: it measures nullnet's data plane side by side with a
// direct connection, HAProxy and nginx in one run on this machine, adds the control-plane
// figures, prints one summary table and writes it as JSON under scripts/bench/results.
//
// It is a tool, not a test: it never runs under `go test`. See website/docs/performance.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/scripts/bench/internal/anchor"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
)

// options are the command's flags.
type options struct {
	smoke       bool
	runs        int
	duration    time.Duration
	udpSessions int
	root        string
	out         string
	nullnetBin  string
	consulBin   string
	skip        map[string]bool
	keep        bool
	profile     bool
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var skip string
	fs := flag.NewFlagSet("nullnet-bench", flag.ContinueOnError)
	fs.BoolVar(&o.smoke, "smoke", false, "a few seconds: one short run of every figure, to keep the bench working")
	fs.IntVar(&o.runs, "runs", 3, "runs per figure; the table shows the median")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each throughput, connection-rate and UDP measurement (whole seconds)")
	fs.IntVar(&o.udpSessions, "udp-sessions", 100000, "idle UDP sessions for the memory figure (capped by the open-file limit)")
	fs.StringVar(&o.root, "root", ".", "the nullnet module root")
	fs.StringVar(&o.out, "out", "", "results directory (default <root>/scripts/bench/results)")
	fs.StringVar(&o.nullnetBin, "nullnet", "", "nullnet binary (default <root>/bin/nullnet)")
	fs.StringVar(&skip, "skip", "", "comma-separated parts to leave out: nullnet, anchors, tcp, connrate, policy, proxyproto, udp, passthrough, sessions, flood, overlay, https, controlplane")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs and process logs)")
	fs.BoolVar(&o.profile, "profile", false, "record each relay with perf(1) during the loopback TCP, connection-rate and UDP figures; reports go to the results directory")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	o.skip = map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.skip[s] = true
		}
	}
	if o.smoke {
		o.runs, o.duration = 1, time.Second
		o.udpSessions = min(o.udpSessions, 2000)
	}
	o.duration = max(time.Second, o.duration.Round(time.Second))
	if o.out == "" {
		o.out = filepath.Join(o.root, "scripts", "bench", "results")
	}
	if o.nullnetBin == "" {
		o.nullnetBin = filepath.Join(o.root, "bin", "nullnet")
	}
	// NULLNET_CONSUL_BIN, the install-consul cache, or consul on PATH.
	o.consulBin, _ = consultest.FindBinary()
	log := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Info, Output: os.Stderr})

	if err := anchor.Installed(); err != nil {
		log.Error("cannot run the bench", "error", err)
		return 1
	}
	limit := raiseNoFile()
	// Each idle session costs the relay one upstream socket, so the figure is measured at what the
	// open-file limit allows and scaled (the note in the table says so).
	// The flood figure, measured after it with those sessions still open, needs room for its own
	// (a few thousand under nullnet's default admission rate).
	headroom := 3000
	if !o.skip["flood"] {
		headroom = 8000
	}
	if maxSessions := int(limit) - headroom; o.udpSessions > maxSessions {
		log.Warn("open-file limit caps the idle-session figure", "limit", limit, "sessions", maxSessions)
		o.udpSessions = max(1000, maxSessions)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	work, err := os.MkdirTemp("", "nullnet-bench-")
	if err != nil {
		log.Error("work dir", "error", err)
		return 1
	}
	if o.keep {
		log.Info("keeping the work directory", "dir", work)
	} else {
		defer os.RemoveAll(work)
	}

	rep := &report.Report{Started: time.Now().UTC(), Smoke: o.smoke, Runs: o.runs, Machine: machine(o.root),
		Settings: map[string]string{
			"duration":         o.duration.String(),
			"udp_sessions":     fmt.Sprint(o.udpSessions),
			"open_file_limit":  fmt.Sprint(limit),
			"conn_workers":     fmt.Sprint(connWorkers),
			"udp_clients":      fmt.Sprint(udpClients),
			"udp_window":       fmt.Sprint(udpWindow),
			"iperf3_streams":   "1 and 8",
			"relay_processes":  "haproxy: nbthread = cores; nginx: worker_processes auto; nullnet: GOMAXPROCS = cores",
			"nullnet_topology": "nullnet agent -dev (server+client+proxy in one process), network = direct, loopback",
		}}

	b := &bench{o: o, log: log, work: work, rep: rep}
	if err := b.dataPlane(ctx); err != nil {
		log.Error("data plane bench failed", "error", err)
		rep.Notes = append(rep.Notes, "data plane: "+err.Error())
	}
	if !o.skip["overlay"] && !o.skip["tcp"] && ctx.Err() == nil {
		if err := b.overlay(ctx); err != nil {
			log.Error("overlay bench failed", "error", err)
			rep.Notes = append(rep.Notes, "overlay: "+err.Error())
		}
	}
	if !o.skip["https"] && ctx.Err() == nil {
		if err := b.https(ctx); err != nil {
			log.Error("HTTPS bench failed", "error", err)
			rep.Notes = append(rep.Notes, "https: "+err.Error())
		}
	}
	if !o.skip["controlplane"] && ctx.Err() == nil {
		b.controlPlane(ctx)
	}
	rep.Finish()
	fmt.Println()
	rep.WriteTable(os.Stdout)
	path, err := rep.WriteJSON(o.out)
	if err != nil {
		log.Error("writing results", "error", err)
		return 1
	}
	fmt.Printf("\nresults: %s\n", path)
	if rep.Failed() {
		return 1
	}
	return 0
}

// raiseNoFile lifts the soft open-file limit to the hard one; children (relays) inherit it.
func raiseNoFile() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1024
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

func machine(root string) report.Machine {
	m := report.Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = utsString(u.Release[:])
	}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile(filepath.Join(root, ".git", "HEAD")); err == nil {
		head := strings.TrimSpace(string(b))
		if ref, ok := strings.CutPrefix(head, "ref: "); ok {
			b, _ = os.ReadFile(filepath.Join(root, ".git", ref))
			head = strings.TrimSpace(string(b))
		}
		if len(head) >= 12 {
			m.Commit = head[:12]
		}
	}
	return m
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}
