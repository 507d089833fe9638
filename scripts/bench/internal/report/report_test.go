package report

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, c := range cases {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) should be NaN")
	}
}

func TestRatiosAndVerdicts(t *testing.T) {
	cases := []struct {
		name       string
		higher     bool
		values     map[string][]float64
		goal       Goal
		vsDirect   float64
		vsBest     float64
		met        bool
		naVerdicts bool
	}{
		{
			name: "throughput beats best anchor", higher: true,
			values:   map[string][]float64{Nullnet: {9, 10, 11}, Direct: {20}, HAProxy: {8}, Nginx: {5}},
			goal:     Goal{Against: "best", Ratio: 1.0},
			vsDirect: 0.5, vsBest: 10.0 / 8, met: true,
		},
		{
			name: "throughput misses direct", higher: true,
			values:   map[string][]float64{Nullnet: {10}, Direct: {20}, HAProxy: {8}},
			goal:     Goal{Against: Direct, Ratio: 0.9},
			vsDirect: 0.5, vsBest: 10.0 / 8, met: false,
		},
		{
			name: "cpu: best anchor is the lowest", higher: false,
			values: map[string][]float64{Nullnet: {1.0}, HAProxy: {0.5}, Nginx: {1.2}},
			goal:   Goal{Against: "best", Ratio: 1.0},
			vsBest: 2, met: false,
		},
		{
			name: "absolute limit, lower is better", higher: false,
			values: map[string][]float64{Nullnet: {250}, Nginx: {580}},
			goal:   Goal{Limit: 300},
			vsBest: 250.0 / 580, met: true,
		},
		{
			name: "nullnet missing", higher: true,
			values: map[string][]float64{Direct: {1}},
			goal:   Goal{Against: Direct, Ratio: 0.9}, naVerdicts: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Report{}
			f := r.Figure("x", "X", "u", c.higher, c.goal)
			for target, samples := range c.values {
				for _, s := range samples {
					f.Add(target, s)
				}
			}
			r.Finish()
			if !near(f.VsDirect, c.vsDirect) || !near(f.VsBest, c.vsBest) {
				t.Errorf("ratios = %v, %v; want %v, %v", f.VsDirect, f.VsBest, c.vsDirect, c.vsBest)
			}
			v := f.Verdicts[0]
			if c.naVerdicts {
				if v.Reason == "" {
					t.Errorf("verdict %+v: want not applicable", v)
				}
				return
			}
			if v.Met != c.met || v.Reason != "" {
				t.Errorf("verdict %+v: want met=%v", v, c.met)
			}
		})
	}
}

func TestFailedAndTable(t *testing.T) {
	r := &Report{Runs: 1}
	f := r.Figure("tcp", "TCP throughput", "Gbit/s", true, Goal{Against: Direct, Ratio: 0.9})
	f.Add(Direct, 10)
	f.Fail(Nullnet, errors.New("relay never\ncarried traffic"))
	r.Finish()
	if !r.Failed() {
		t.Error("a target without samples and with an error must fail the run")
	}
	var b strings.Builder
	r.WriteTable(&b)
	out := b.String()
	for _, want := range []string{"TCP throughput", "err", "relay never carried traffic", "0.9× direct: n/a"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
