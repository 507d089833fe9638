// Package report collects benchmark samples, reduces them to medians and ratios, checks the
// targets of the benchmark issue, and writes the summary table and the JSON results.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets in table order. Nullnet is always first; the rest are what it is compared with.
const (
	Nullnet = "nullnet"
	Direct  = "direct"
	HAProxy = "haproxy"
	Nginx   = "nginx"
)

// Anchors are the proxies a user could pick instead.
var Anchors = []string{HAProxy, Nginx}

// Columns is the table's target order.
var Columns = []string{Nullnet, Direct, HAProxy, Nginx}

// Goal is a target from the benchmark issue for one figure.
type Goal struct {
	// Against is Direct, a target name, "best" (best anchor) or "" for an absolute limit.
	Against string `json:"against,omitempty"`
	// Ratio is the least (higher-is-better) or most (lower-is-better) nullnet/against allowed.
	Ratio float64 `json:"ratio,omitempty"`
	// Limit is the absolute bound when Against is "".
	Limit float64 `json:"limit,omitempty"`
}

func (g Goal) String() string {
	if g.Against == "" {
		return fmt.Sprintf("%g", g.Limit)
	}
	against := g.Against
	if against == "best" {
		against = "best anchor"
	}
	return fmt.Sprintf("%g× %s", g.Ratio, against)
}

// Value is one target's samples for a figure.
type Value struct {
	Samples []float64 `json:"samples,omitempty"`
	Median  float64   `json:"median"`
	Error   string    `json:"error,omitempty"`
}

// Figure is one row of the table.
type Figure struct {
	Name   string            `json:"name"`
	Title  string            `json:"title"`
	Unit   string            `json:"unit"`
	Higher bool              `json:"higher_is_better"`
	Values map[string]*Value `json:"values"`
	Goals  []Goal            `json:"goals,omitempty"`
	// Computed by Finish.
	VsDirect float64       `json:"ratio_vs_direct,omitempty"`
	VsBest   float64       `json:"ratio_vs_best_anchor,omitempty"`
	Verdicts []GoalVerdict `json:"verdicts,omitempty"`
	Note     string        `json:"note,omitempty"`
}

// GoalVerdict says whether a goal was met.
type GoalVerdict struct {
	Goal   string  `json:"goal"`
	Actual float64 `json:"actual"`
	Met    bool    `json:"met"`
	Reason string  `json:"reason,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores     int    `json:"cores"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Commit    string `json:"commit,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
}

// Report is one bench run.
type Report struct {
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Smoke    bool              `json:"smoke"`
	Runs     int               `json:"runs"`
	Machine  Machine           `json:"machine"`
	Settings map[string]string `json:"settings"`
	Figures  []*Figure         `json:"figures"`
	Notes    []string          `json:"notes,omitempty"`
}

// Figure returns the named figure, adding it on first use.
func (r *Report) Figure(name, title, unit string, higher bool, goals ...Goal) *Figure {
	for _, f := range r.Figures {
		if f.Name == name {
			return f
		}
	}
	f := &Figure{Name: name, Title: title, Unit: unit, Higher: higher, Values: map[string]*Value{}, Goals: goals}
	r.Figures = append(r.Figures, f)
	return f
}

// Add records one sample.
func (f *Figure) Add(target string, v float64) {
	val := f.value(target)
	val.Samples = append(val.Samples, v)
}

// Fail records why a target could not be measured; it keeps the first reason.
func (f *Figure) Fail(target string, err error) {
	val := f.value(target)
	if val.Error == "" {
		val.Error = err.Error()
	}
}

func (f *Figure) value(target string) *Value {
	v, ok := f.Values[target]
	if !ok {
		v = &Value{}
		f.Values[target] = v
	}
	return v
}

// Median of the samples; NaN for none.
func Median(s []float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func (f *Figure) median(target string) (float64, bool) {
	v, ok := f.Values[target]
	if !ok || len(v.Samples) == 0 {
		return 0, false
	}
	return v.Median, true
}

// best returns the better anchor median.
func (f *Figure) best() (string, float64, bool) {
	name, best, found := "", 0.0, false
	for _, a := range Anchors {
		m, ok := f.median(a)
		if !ok {
			continue
		}
		if !found || (f.Higher && m > best) || (!f.Higher && m < best) {
			name, best, found = a, m, true
		}
	}
	return name, best, found
}

// Finish computes medians, ratios and goal verdicts.
func (r *Report) Finish() {
	r.Finished = time.Now().UTC()
	for _, f := range r.Figures {
		for _, v := range f.Values {
			if len(v.Samples) > 0 {
				v.Median = Median(v.Samples)
			}
		}
		n, hasN := f.median(Nullnet)
		if d, ok := f.median(Direct); ok && hasN && d != 0 {
			f.VsDirect = n / d
		}
		if _, b, ok := f.best(); ok && hasN && b != 0 {
			f.VsBest = n / b
		}
		f.Verdicts = nil
		for _, g := range f.Goals {
			f.Verdicts = append(f.Verdicts, f.verdict(g, n, hasN))
		}
	}
}

func (f *Figure) verdict(g Goal, n float64, hasN bool) GoalVerdict {
	v := GoalVerdict{Goal: g.String()}
	if !hasN {
		v.Reason = "nullnet not measured"
		return v
	}
	if g.Against == "" {
		v.Actual = n
		v.Met = (f.Higher && n >= g.Limit) || (!f.Higher && n <= g.Limit)
		return v
	}
	var other float64
	var ok bool
	if g.Against == "best" {
		_, other, ok = f.best()
	} else {
		other, ok = f.median(g.Against)
	}
	if !ok || other == 0 {
		v.Reason = g.Against + " not measured"
		return v
	}
	v.Actual = n / other
	v.Met = (f.Higher && v.Actual >= g.Ratio) || (!f.Higher && v.Actual <= g.Ratio)
	return v
}

// Failed reports whether any measurement failed.
func (r *Report) Failed() bool {
	for _, f := range r.Figures {
		for _, v := range f.Values {
			if v.Error != "" && len(v.Samples) == 0 {
				return true
			}
		}
	}
	return false
}

// WriteTable prints the summary: one row per figure, medians, ratios and goal verdicts.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "nullnet bench: %d core(s), kernel %s, %s, median of %d run(s)%s\n\n",
		r.Machine.Cores, r.Machine.Kernel, r.Machine.GoVersion, r.Runs, map[bool]string{true: " (smoke)"}[r.Smoke])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tunit\tnullnet\tdirect\thaproxy\tnginx\tvs direct\tvs best anchor\ttarget")
	for _, f := range r.Figures {
		cells := []string{f.Title, f.Unit + map[bool]string{true: " ↑", false: " ↓"}[f.Higher]}
		for _, t := range Columns {
			cells = append(cells, f.cell(t))
		}
		cells = append(cells, ratio(f.VsDirect), ratio(f.VsBest), f.goalCell())
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	// A target that could not start fails every figure with the same error: say it once.
	type failure struct{ target, err string }
	var order []failure
	figs := map[failure][]string{}
	for _, f := range r.Figures {
		for _, t := range Columns {
			if v, ok := f.Values[t]; ok && v.Error != "" {
				k := failure{t, oneLine(v.Error)}
				if _, seen := figs[k]; !seen {
					order = append(order, k)
				}
				figs[k] = append(figs[k], f.Title)
			}
		}
	}
	if len(order) > 0 {
		fmt.Fprintln(w, "\nnot measured (err):")
		for _, k := range order {
			what := strings.Join(figs[k], ", ")
			if n := len(figs[k]); n > 2 {
				what = fmt.Sprintf("%d figures", n)
			}
			fmt.Fprintf(w, "  %s (%s): %s\n", k.target, what, k.err)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func (f *Figure) cell(target string) string {
	v, ok := f.Values[target]
	switch {
	case !ok:
		return "-"
	case len(v.Samples) == 0 && v.Error != "":
		return "err"
	case len(v.Samples) == 0:
		return "-"
	}
	return format(v.Median)
}

func (f *Figure) goalCell() string {
	var parts []string
	for _, v := range f.Verdicts {
		switch {
		case v.Reason != "":
			parts = append(parts, fmt.Sprintf("%s: n/a", v.Goal))
		case v.Met:
			parts = append(parts, fmt.Sprintf("%s: met", v.Goal))
		default:
			parts = append(parts, fmt.Sprintf("%s: MISSED (%s)", v.Goal, format(v.Actual)))
		}
	}
	return strings.Join(parts, "; ")
}

func ratio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", x)
}

func format(x float64) string {
	switch ax := math.Abs(x); {
	case ax >= 1000:
		return fmt.Sprintf("%.0f", x)
	case ax >= 100:
		return fmt.Sprintf("%.1f", x)
	case ax >= 1:
		return fmt.Sprintf("%.2f", x)
	default:
		return fmt.Sprintf("%.3g", x)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// WriteJSON writes the report to dir/bench-<time>.json and dir/latest.json, returning the path.
func (r *Report) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encoding results: %w", err)
	}
	name := "bench-" + r.Started.Format("20060102T150405Z") + map[bool]string{true: "-smoke"}[r.Smoke] + ".json"
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", fmt.Errorf("writing results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), b, 0o644); err != nil {
		return "", fmt.Errorf("writing results: %w", err)
	}
	return path, nil
}
