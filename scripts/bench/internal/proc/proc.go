// Package proc starts and stops the processes a benchmark measures (relays, servers, Consul,
// the nullnet agent) and reads their CPU time and memory from /proc.
//
// Every process is started in its own process group so that a relay made of several processes
// (nginx's master and workers) is measured and stopped as one.
package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat; 100 on every Linux we run.
const clockTicks = 100

// Process is a started child process whose output goes to a log file.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// Start runs name with args, stdout and stderr appended to logDir/<label>.log. The child dies with
// the bench (Pdeathsig) so an interrupted run leaves nothing behind.
func Start(label, logDir string, env []string, name string, args ...string) (*Process, error) {
	logPath := filepath.Join(logDir, label+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log for %s: %w", label, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", label, name, err)
	}
	p := &Process{Name: label, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig syscall.Signal) error { return syscall.Kill(p.Pid(), sig) }

// Exited reports whether the process has ended, with its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs it.
func (p *Process) Stop(grace time.Duration) {
	if p == nil {
		return
	}
	pgid := p.Pid()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children that outlived the leader (nginx workers) still carry the group id.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// LogTail returns the last n bytes of the process log, for error messages.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// WaitTCP polls until addr accepts a TCP connection, the process exits, or ctx ends.
func (p *Process) WaitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil {
			if exited, perr := p.Exited(); exited {
				return fmt.Errorf("%s exited before %s accepted connections (%v): %s", p.Name, addr, perr, p.LogTail(800))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to accept connections: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Usage is the CPU time and resident memory of a process group at one moment.
type Usage struct {
	CPU      time.Duration // user + system, all processes and threads in the group
	RSSBytes int64         // sum of VmRSS over the group's processes
}

// GroupUsage sums utime+stime and VmRSS over every process whose process group is pgid.
func GroupUsage(pgid int) (Usage, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return Usage{}, fmt.Errorf("reading /proc: %w", err)
	}
	var u Usage
	found := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		fields, err := statFields(string(stat))
		if err != nil || fields.pgrp != pgid {
			continue
		}
		found = true
		u.CPU += time.Duration(fields.utime+fields.stime) * time.Second / clockTicks
		u.RSSBytes += vmRSS(pid)
	}
	if !found {
		return Usage{}, fmt.Errorf("no process in group %d", pgid)
	}
	return u, nil
}

type statInfo struct {
	pgrp         int
	utime, stime int64
}

// statFields parses /proc/PID/stat. The command name may contain spaces and parentheses, so the
// fields are counted from the last ')'.
func statFields(s string) (statInfo, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return statInfo{}, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	// After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
	if len(f) < 13 {
		return statInfo{}, errors.New("short stat")
	}
	pgrp, err1 := strconv.Atoi(f[2])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return statInfo{}, fmt.Errorf("parsing stat: %w", err)
	}
	return statInfo{pgrp: pgrp, utime: ut, stime: st}, nil
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1 (also free for UDP in practice:
// the caller binds both right away).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// GroupPids lists the processes of process group pgid.
func GroupPids(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if f, err := statFields(string(stat)); err == nil && f.pgrp == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}
