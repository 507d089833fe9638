package main

import (
	"bytes"
	"strings"
	"testing"
)

const perfScriptSample = `nullnet 1 1.0:    1001001 cpu-clock:ppp: 
	ffffffff82011b87 tcp_close+0x17 ([kernel.kallsyms])
	ffffffff816b5e19 __x64_sys_close+0x39 ([kernel.kallsyms])
	ffffffff821f2e5f do_syscall_64+0x6f ([kernel.kallsyms])
	            de6e internal/runtime/syscall/linux.Syscall6+0xe (/bin/nullnet)

nullnet 1 1.1:    1001001 cpu-clock:ppp: 
	ffffffff81e2d64f sock_write_iter+0x4f ([kernel.kallsyms])
	ffffffff816bb796 ksys_write+0xe6 ([kernel.kallsyms])
	ffffffff816bb796 __sys_ignored_outer+0xe6 ([kernel.kallsyms])
	ffffffff821f2e5f do_syscall_64+0x6f ([kernel.kallsyms])

nullnet 1 1.2:    1001001 cpu-clock:ppp: 
	ffffffff816b5e19 __x64_sys_nanosleep+0x39 ([kernel.kallsyms])
	            1234 runtime.usleep.abi0+0x37 (/bin/nullnet)
	            1235 runtime.sysmon+0x37 (/bin/nullnet)

nullnet 1 1.3:    1001001 cpu-clock:ppp: 
	            1236 runtime.copystack+0x37 (/bin/nullnet)
	            1237 runtime.newstack+0x37 (/bin/nullnet)
	            1238 runtime.morestack.abi0+0x37 (/bin/nullnet)
`

func TestAttributeBySyscallAndRuntime(t *testing.T) {
	a, err := attribute(strings.NewReader(perfScriptSample))
	if err != nil {
		t.Fatal(err)
	}
	if a.samples != 4 {
		t.Fatalf("samples = %d, want 4", a.samples)
	}
	for name, want := range map[string]int{"close": 1, "write": 1, "nanosleep": 1, "user space": 1} {
		if got := a.bySyscall[name]; got != want {
			t.Errorf("bySyscall[%q] = %d, want %d (all: %v)", name, got, want, a.bySyscall)
		}
	}
	for name, want := range map[string]int{"sysmon (background monitor)": 1, "stack growth": 1} {
		if got := a.byRuntime[name]; got != want {
			t.Errorf("byRuntime[%q] = %d, want %d (all: %v)", name, got, want, a.byRuntime)
		}
	}
	var out bytes.Buffer
	a.write(&out)
	if !strings.Contains(out.String(), " 25.0%  close") {
		t.Errorf("report lacks the close share:\n%s", out.String())
	}
}
