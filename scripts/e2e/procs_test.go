package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// registry holds the teardown steps of everything the suite created, newest last. It is global
// because the signal handler in TestMain must reach it, and the cluster is shared by all
// scenarios.
var registry teardowns

type teardowns struct {
	mu    sync.Mutex
	steps []teardownStep
	// running serialises whole teardowns: a signal arriving during the normal one waits for it
	// instead of deleting namespaces under processes still being stopped.
	running sync.Mutex
}

type teardownStep struct {
	name string
	fn   func()
	// concurrent steps next to each other run together: stopping a dozen daemons one after the
	// other, each with a grace period, would take minutes.
	concurrent bool
}

func (r *teardowns) add(name string, fn func()) { r.push(teardownStep{name: name, fn: fn}) }

// addProcess registers a process stop, which may run alongside other process stops.
func (r *teardowns) addProcess(name string, fn func()) {
	r.push(teardownStep{name: name, fn: fn, concurrent: true})
}

func (r *teardowns) push(s teardownStep) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s)
}

// teardownAll runs every step once, newest first (processes before the namespaces they live in,
// namespaces before the bridge). Safe to call from several paths.
func (r *teardowns) teardownAll() {
	r.running.Lock()
	defer r.running.Unlock()
	for {
		batch := r.popBatch()
		if len(batch) == 0 {
			return
		}
		var wg sync.WaitGroup
		for _, s := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.fn()
			}()
		}
		wg.Wait()
	}
}

// popBatch removes the newest step, with every concurrent step directly below it if it is
// concurrent itself.
func (r *teardowns) popBatch() []teardownStep {
	r.mu.Lock()
	defer r.mu.Unlock()
	var batch []teardownStep
	for len(r.steps) > 0 {
		s := r.steps[len(r.steps)-1]
		if len(batch) > 0 && (!s.concurrent || !batch[0].concurrent) {
			break
		}
		batch = append(batch, s)
		r.steps = r.steps[:len(r.steps)-1]
		if !s.concurrent {
			break
		}
	}
	return batch
}

// proc is one daemon the suite started inside a namespace, in its own process group, its output
// in a log file that failing scenarios print.
type proc struct {
	name    string
	ns      string
	argv    []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	stopped sync.Once
}

// startProc runs argv inside namespace ns (via `ip netns exec`, which execs in place, so the
// process group is the daemon's own).
func startProc(ns, name, logDir string, argv ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file for %s: %w", name, err)
	}
	fmt.Fprintf(f, "==== %s: %s\n", time.Now().UTC().Format(time.RFC3339Nano), strings.Join(argv, " "))
	full := append([]string{"netns", "exec", ns}, argv...)
	cmd := exec.Command("ip", full...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	p := &proc{name: name, ns: ns, argv: argv, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	registry.addProcess("process "+name, func() { p.stop(5 * time.Second) })
	return p, nil
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs the group. Consul
// client agents can hang while leaving, hence the hard kill.
func (p *proc) stop(grace time.Duration) {
	p.stopped.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
			}
		}
		// Children that left the group's leader behind (none expected) die with the group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// logTail returns the last max bytes of the process's log.
func (p *proc) logTail(max int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > max {
		b = append([]byte("…"), b[len(b)-max:]...)
	}
	return string(b)
}

// run runs a short command and returns its combined output; err includes the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	if ctx == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// nsRun runs a short command inside a namespace with a timeout.
func nsRun(timeout time.Duration, ns string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := run(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return out, fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return out, err
}
