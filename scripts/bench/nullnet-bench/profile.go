package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
)

// profiler records where a relay spends its CPU during one measurement, with perf(1), so that a
// missed target comes with a profile rather than a guess. Reports go to the results directory
// as profile-<target>-<figure>.txt. Enabled with -profile.
type profiler struct {
	cmd  *exec.Cmd
	data string
	out  string
}

// startProfile samples every process of the relay's group for d. It returns nil (and the
// measurement goes on unprofiled) when perf is missing or fails to attach.
func (b *bench) startProfile(ctx context.Context, t *target, figure string, d time.Duration) *profiler {
	if !b.o.profile || t.relay == nil {
		return nil
	}
	pids := proc.GroupPids(t.relay.Pid())
	if len(pids) == 0 {
		return nil
	}
	var ids []string
	for _, p := range pids {
		ids = append(ids, strconv.Itoa(p))
	}
	p := &profiler{data: filepath.Join(b.work, "perf-"+t.name+"-"+figure+".data"),
		out: filepath.Join(b.o.out, "profile-"+t.name+"-"+figure+".txt")}
	p.cmd = exec.CommandContext(ctx, "perf", "record", "-q", "-F", "999", "-g", "-p", strings.Join(ids, ","),
		"-o", p.data, "--", "sleep", strconv.Itoa(int(d.Seconds())))
	if err := p.cmd.Start(); err != nil {
		b.log.Warn("perf record did not start (apt-get install linux-perf)", "error", err)
		return nil
	}
	return p
}

// finish waits for perf and writes the flat report (self time by binary and symbol), then the
// samples by system call and by Go runtime activity (attribute).
func (p *profiler) finish(ctx context.Context) string {
	if p == nil {
		return ""
	}
	_ = p.cmd.Wait()
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", p.data, "--stdio", "--no-children",
		"--sort", "dso,symbol", "-g", "none", "--percent-limit", "1").Output()
	if err != nil || len(out) == 0 {
		return ""
	}
	// The same samples by system call and by Go runtime activity, appended to the flat report.
	if script, err := exec.CommandContext(ctx, "perf", "script", "-i", p.data).Output(); err == nil {
		if a, err := attribute(bytes.NewReader(script)); err == nil {
			var buf bytes.Buffer
			a.write(&buf)
			out = append(out, buf.Bytes()...)
		}
	}
	_ = os.MkdirAll(filepath.Dir(p.out), 0o755)
	if err := os.WriteFile(p.out, out, 0o644); err != nil {
		return ""
	}
	return fmt.Sprintf("profile: %s", p.out)
}
