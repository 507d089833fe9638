// Package iperf drives iperf3 (Debian's), the one TCP throughput client and server used for
// every path, so that nullnet and the anchors are measured with the same tool.
package iperf

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
)

// StartServer runs `iperf3 -s` on port (all addresses, as a nullnet host service must listen)
// until stopped.
func StartServer(ctx context.Context, logDir string, port int) (*proc.Process, error) {
	p, err := proc.Start("iperf3-server", logDir, nil, "iperf3", "-s", "-p", strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitTCP(ctx, "127.0.0.1:"+strconv.Itoa(port)); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return p, nil
}

// Result is one client run.
type Result struct {
	BitsPerSecond float64 // received by the server, all streams
	Bytes         int64
	Elapsed       time.Duration
}

// report is the part of `iperf3 -J` output we read.
type report struct {
	End struct {
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// Run connects to addr:port with `streams` parallel streams for d and returns what the server
// received. The server may be behind a relay: the control connection goes through it too.
func Run(ctx context.Context, host string, port, streams int, d time.Duration) (Result, error) {
	return RunIn(ctx, "", host, port, streams, d)
}

// StartServerIn runs `iperf3 -s` on port (all addresses) inside network namespace netns. It
// cannot be probed from here; callers warm up with RunIn.
func StartServerIn(logDir, netns string, port int) (*proc.Process, error) {
	return proc.Start("iperf3-server-"+netns, logDir, nil, "ip", "netns", "exec", netns,
		"iperf3", "-s", "-p", strconv.Itoa(port))
}

// RunIn is Run from inside network namespace netns ("" = this one).
func RunIn(ctx context.Context, netns, host string, port, streams int, d time.Duration) (Result, error) {
	secs := strconv.Itoa(max(1, int(d.Seconds()+0.5))) // iperf3 3.12 takes whole seconds
	args := []string{"-c", host, "-p", strconv.Itoa(port),
		"-P", strconv.Itoa(streams), "-t", secs, "-J", "--connect-timeout", "5000"}
	name := "iperf3"
	if netns != "" {
		name, args = "ip", append([]string{"netns", "exec", netns, "iperf3"}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.Output()
	var r report
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return Result{}, fmt.Errorf("iperf3 to %s:%d: %v (output: %.300s)", host, port, err, out)
	}
	if r.Error != "" {
		return Result{}, fmt.Errorf("iperf3 to %s:%d: %s", host, port, r.Error)
	}
	if err != nil {
		return Result{}, fmt.Errorf("iperf3 to %s:%d: %w", host, port, err)
	}
	s := r.End.SumReceived
	return Result{BitsPerSecond: s.BitsPerSecond, Bytes: s.Bytes,
		Elapsed: time.Duration(s.Seconds * float64(time.Second))}, nil
}
