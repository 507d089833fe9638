package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/ctrlplane"
	"github.com/nullnet/nullnet/scripts/bench/internal/report"
)

// cpSource is one control-plane measuring program and the issue that set its targets.
type cpSource struct {
	label string // row prefix in the table
	pkg   string // package directory under the module root
	bench string // Go benchmark name; empty for a program run with go run
	goals func(ctrlplane.Figure) (report.Goal, bool)
}

var cpSources = []cpSource{
	{label: "stack edit → proxy table", pkg: "scripts/bench/propagation", goals: func(f ctrlplane.Figure) (report.Goal, bool) {
		// Issue 3: propagation p99 under 500 ms.
		return msGoal(f, "p99", 500)
	}},
	{label: "overlay end", pkg: "agent/overlay", bench: "BenchmarkSetupTeardown", goals: func(f ctrlplane.Figure) (report.Goal, bool) {
		// Issue 4: setup of one end under 10 ms p50 (the metric, not the benchmark, says which).
		if t := strings.ToLower(f.Title); strings.Contains(t, "setup") && !strings.Contains(t, "teardown") {
			return msGoal(f, "p50", 10)
		}
		return report.Goal{}, false
	}},
	{label: "Proxy call / churn", pkg: "scripts/bench/controlplane", goals: func(f ctrlplane.Figure) (report.Goal, bool) {
		// Issue 5: cold Proxy call p50 under 20 ms; churn under 30 s, cleanup under 5 s.
		n := strings.ToLower(f.Name)
		switch {
		case strings.Contains(n, "cleanup"):
			return secGoal(f, 5)
		case strings.Contains(n, "churn") && (strings.Contains(n, "total") || strings.Contains(n, "time")):
			return secGoal(f, 30)
		}
		return msGoal(f, "p50", 20)
	}},
	{label: "stack services at scale", pkg: "scripts/bench/stackscale", goals: func(ctrlplane.Figure) (report.Goal, bool) {
		// Issue 17: 10,000 services to a complete table in < 10 s with <= 8 connections to
		// Consul; the program sets each figure's limit itself.
		return report.Goal{}, false
	}},
}

// controlPlane runs every control-plane program that exists in the tree and adds its figures
// (nullnet only: the anchors have no equivalent). Smoke mode leaves them out to stay short.
func (b *bench) controlPlane(ctx context.Context) {
	if b.o.smoke {
		b.rep.Notes = append(b.rep.Notes, "control-plane figures are not run in smoke mode")
		return
	}
	env := []string{"NULLNET_BIN=" + b.o.nullnetBin, "NULLNET_CONSUL_BIN=" + b.o.consulBin}
	for _, src := range cpSources {
		dir := filepath.Join(b.o.root, src.pkg)
		if !ctrlplane.Exists(dir) {
			b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("%s: %s does not exist yet; figure missing", src.label, src.pkg))
			continue
		}
		b.log.Info("control plane", "program", src.pkg)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		var out ctrlplane.Output
		var err error
		if src.bench != "" {
			out, err = ctrlplane.RunGoBench(cctx, b.o.root, src.pkg, src.bench, "500x", env)
		} else {
			out, err = ctrlplane.Run(cctx, b.o.root, src.pkg, env)
		}
		cancel()
		if err != nil {
			f := b.rep.Figure("cp_"+src.pkg, src.label, "", false)
			f.Fail(report.Nullnet, err)
			continue
		}
		for _, cf := range out.Figures {
			var goals []report.Goal
			if cf.Limit != 0 {
				goals = append(goals, report.Goal{Limit: cf.Limit})
			} else if g, ok := src.goals(cf); ok {
				goals = append(goals, g)
			}
			title := cf.Title
			if title == "" {
				title = cf.Name
			}
			f := b.rep.Figure("cp_"+src.pkg+"_"+cf.Name, src.label+": "+title, cf.Unit, cf.Higher, goals...)
			f.Add(report.Nullnet, cf.Value)
		}
	}
}

// msGoal is an absolute limit in milliseconds for a figure whose name carries the quantile.
func msGoal(f ctrlplane.Figure, quantile string, limitMS float64) (report.Goal, bool) {
	n, u := strings.ToLower(f.Name+" "+f.Title), strings.ToLower(f.Unit)
	if !strings.Contains(n, quantile) {
		return report.Goal{}, false
	}
	switch {
	case strings.Contains(u, "ms"):
		return report.Goal{Limit: limitMS}, true
	case strings.Contains(u, "us") || strings.Contains(u, "µs"):
		return report.Goal{Limit: limitMS * 1000}, true
	case strings.Contains(u, "ns"):
		return report.Goal{Limit: limitMS * 1e6}, true
	case u == "s" || strings.HasSuffix(u, "-s"):
		return report.Goal{Limit: limitMS / 1000}, true
	}
	return report.Goal{}, false
}

// secGoal is an absolute limit in seconds.
func secGoal(f ctrlplane.Figure, limitS float64) (report.Goal, bool) {
	switch u := strings.ToLower(f.Unit); {
	case strings.Contains(u, "ms"):
		return report.Goal{Limit: limitS * 1000}, true
	case u == "s" || strings.HasSuffix(u, "-s"):
		return report.Goal{Limit: limitS}, true
	}
	return report.Goal{}, false
}
