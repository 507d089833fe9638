// Package ctrlplane runs the control-plane measuring programs other parts of nullnet ship
// (scripts/bench/propagation, scripts/bench/controlplane, agent/overlay's BenchmarkSetupTeardown)
// and turns their output into figures.
//
// The contract for a program under scripts/bench/<name>: it runs with no arguments (NULLNET_BIN,
// NULLNET_CONSUL_BIN and NULLNET_BENCH_SMOKE=1 in smoke mode are in its environment) and prints,
// on any stdout line, a JSON object {"figures":[{"name","title","unit","value","higher_is_better",
// "limit"}]} — limit being the target, 0 for none. Lines of the form `name: value unit`
// (e.g. "p99: 41.2 ms") are read too, so a program that only prints text is still reported.
package ctrlplane

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Figure is one control-plane figure.
type Figure struct {
	Name   string  `json:"name"`
	Title  string  `json:"title"`
	Unit   string  `json:"unit"`
	Value  float64 `json:"value"`
	Higher bool    `json:"higher_is_better"`
	Limit  float64 `json:"limit"`
}

// Output is what a program printed, parsed.
type Output struct {
	Figures []Figure
	Raw     string
}

// quantiles matches Go durations after a quantile name on one line: "p50 12ms  p99 41ms".
var quantiles = regexp.MustCompile(`\b(p[0-9]+|max|mean|avg)[ :=]+([0-9]+(?:\.[0-9]+)?(?:ns|µs|us|ms|s|m)(?:[0-9]+(?:\.[0-9]+)?(?:ns|µs|us|ms|s))*)\b`)

var textLine = regexp.MustCompile(`^\s*([A-Za-z][\w ./()-]*?)\s*[:=]\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|µs|us|ns|/s|%|[A-Za-z/]+)?\s*$`)

// Parse reads a program's stdout.
func Parse(out []byte) Output {
	o := Output{Raw: string(out)}
	var text []Figure
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "{") {
			var doc struct {
				Figures []Figure `json:"figures"`
			}
			if json.Unmarshal([]byte(line), &doc) == nil && len(doc.Figures) > 0 {
				o.Figures = append(o.Figures, doc.Figures...)
				continue
			}
		}
		if m := textLine.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			text = append(text, Figure{Name: m[1], Title: m[1], Unit: m[3], Value: v})
			continue
		}
		for _, m := range quantiles.FindAllStringSubmatch(line, -1) {
			if d, err := time.ParseDuration(m[2]); err == nil {
				text = append(text, Figure{Name: m[1], Title: m[1], Unit: "ms", Value: float64(d) / float64(time.Millisecond)})
			}
		}
	}
	if len(o.Figures) == 0 {
		o.Figures = text
	}
	return o
}

// ParseGoBench reads `go test -bench` output: every "value unit" pair after the iteration count
// of each Benchmark line becomes a figure named after the unit (b.ReportMetric's unit names the
// metric, e.g. "p50-ms").
func ParseGoBench(out []byte) Output {
	o := Output{Raw: string(out)}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i] // drop the GOMAXPROCS suffix
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			metric := f[i+1]
			if err != nil || strings.HasSuffix(metric, "/op") {
				continue // the harness's own per-op figures say nothing the metrics do not
			}
			// "setup-p50-ms" is the setup p50 in ms; "tunnels/s" a rate (higher is better).
			unit, title := metric, metric
			for _, u := range []string{"ms", "us", "ns", "s"} {
				if t, ok := strings.CutSuffix(metric, "-"+u); ok {
					unit, title = u, strings.ReplaceAll(t, "-", " ")
					break
				}
			}
			o.Figures = append(o.Figures, Figure{Name: name + " " + metric, Title: title, Unit: unit, Value: v,
				Higher: strings.HasSuffix(metric, "/s")})
		}
	}
	return o
}

// Exists reports whether a Go package directory has Go files.
func Exists(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
			return true
		}
	}
	return false
}

// Run runs `go run ./<pkg>` from the module root and parses what it prints.
func Run(ctx context.Context, root, pkg string, env []string) (Output, error) {
	cmd := exec.CommandContext(ctx, "go", "run", "./"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	o := Parse(out)
	if err != nil {
		return o, fmt.Errorf("go run ./%s: %w: %s", pkg, err, tail(stderr.String(), 600))
	}
	if len(o.Figures) == 0 {
		return o, fmt.Errorf("go run ./%s printed no figure: %s", pkg, tail(string(out), 400))
	}
	return o, nil
}

// RunGoBench runs one Go benchmark with a fixed iteration count.
func RunGoBench(ctx context.Context, root, pkg, bench, benchtime string, env []string) (Output, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^"+bench+"$",
		"-benchtime", benchtime, "-count", "1", "./"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	o := ParseGoBench(out)
	if err != nil {
		return o, fmt.Errorf("go test -bench %s ./%s: %w: %s", bench, pkg, err, tail(string(out), 600))
	}
	if len(o.Figures) == 0 {
		return o, fmt.Errorf("benchmark %s not found in ./%s: %s", bench, pkg, tail(string(out), 400))
	}
	return o, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
