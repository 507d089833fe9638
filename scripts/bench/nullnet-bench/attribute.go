package main

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// attribution splits a relay's CPU samples by the system call they were taken in and by the Go
// runtime activity above them, from `perf script` output (call chains, leaf first). The flat
// symbol report shows where the kernel spends time (spin-lock releases, context switches) but
// not which call paid for it; this answers "which syscall" and "how much is Go's own cost".
type attribution struct {
	samples   int
	bySyscall map[string]int // kernel samples by the syscall they ran under; "user space" for the rest
	byRuntime map[string]int // inclusive: samples with a Go runtime activity anywhere in the chain
}

// runtimeActivities are Go runtime functions whose presence in a call chain marks the sample as
// that activity's cost (first match wins, in this order).
var runtimeActivities = []struct{ fn, name string }{
	{"runtime.sysmon", "sysmon (background monitor)"},
	{"runtime.morestack", "stack growth"},
	{"runtime.gcBgMarkWorker", "garbage collection"},
	{"runtime.mallocgc", "allocation"},
	{"runtime.mcall", "scheduler (park, find work)"},
	{"runtime.schedule", "scheduler (park, find work)"},
	{"runtime.newproc", "goroutine start"},
	{"runtime.goexit0", "goroutine exit"},
}

func attribute(r io.Reader) (*attribution, error) {
	a := &attribution{bySyscall: map[string]int{}, byRuntime: map[string]int{}}
	var chain []string
	flush := func() {
		if len(chain) == 0 {
			return
		}
		a.samples++
		a.bySyscall[syscallOf(chain)]++
		for _, act := range runtimeActivities {
			if chainHas(chain, act.fn) {
				a.byRuntime[act.name]++
				break
			}
		}
		chain = chain[:0]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			// "\t    ffffffff81234567 __x64_sys_connect+0x1d ([kernel.kallsyms])"
			if f := strings.Fields(line); len(f) >= 2 {
				sym, _, _ := strings.Cut(f[1], "+")
				chain = append(chain, strings.TrimSuffix(sym, ".abi0"))
			}
		}
	}
	flush()
	return a, sc.Err()
}

// syscallOf names the system call a chain ran under, walking from the leaf towards the root.
func syscallOf(chain []string) string {
	for _, sym := range chain {
		for _, prefix := range []string{"__x64_sys_", "__do_sys_", "__se_sys_", "__sys_", "ksys_"} {
			if name, ok := strings.CutPrefix(sym, prefix); ok {
				return name
			}
		}
	}
	// close(2) hands the socket's teardown to task work that runs on the way back to user
	// space, outside the syscall's own frame.
	if chainHas(chain, "task_work_run") {
		return "close (teardown at syscall exit)"
	}
	for _, sym := range chain {
		switch {
		case sym == "do_syscall_64" || sym == "entry_SYSCALL_64_after_hwframe":
			return "syscall entry/exit"
		case strings.HasPrefix(sym, "asm_sysvec_") || strings.HasPrefix(sym, "asm_common_interrupt"):
			return "interrupts"
		}
	}
	return "user space"
}

func chainHas(chain []string, fn string) bool {
	for _, sym := range chain {
		if sym == fn {
			return true
		}
	}
	return false
}

// write prints both tables, shares of all samples, down to 1%.
func (a *attribution) write(w io.Writer) {
	if a.samples == 0 {
		return
	}
	table := func(title string, m map[string]int) {
		fmt.Fprintf(w, "\n# %s (share of %d samples)\n", title, a.samples)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
		for _, k := range keys {
			if share := 100 * float64(m[k]) / float64(a.samples); share >= 1 {
				fmt.Fprintf(w, "%6.1f%%  %s\n", share, k)
			}
		}
	}
	table("CPU by system call", a.bySyscall)
	table("CPU under Go runtime activities (the relay's own overhead; 0 for C relays)", a.byRuntime)
}
