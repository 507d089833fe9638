// Package e2e is nullnet's end-to-end suite: a small cluster of network namespaces joined by an
// underlay bridge, a real Consul cluster, the real bin/nullnet started from config files, real
// services (redis, dnsmasq, an HTTP server, sshd) and real clients (redis-cli, dig, curl, ssh) run
// from an "outside" namespace. See website/docs/testing.md.
//
// Every name a run creates starts with its own prefix, and a marker file names the process that
// owns it, so that runs can share a host and a run removes only what dead runs left behind
// (run_test.go).
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e needs root: it creates network namespaces, a bridge and kernel "+
			"VXLAN devices and runs daemons in them; run `sudo make e2e` (CI runs it as root)")
		os.Exit(1)
	}
	// An earlier run killed hard (SIGKILL, a lost CI runner) may have left namespaces, links and
	// daemons behind: those of runs whose process is gone are removed, live runs are left alone.
	if err := claimRun(func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...) }); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: claiming a prefix and subnet for this run: %v\n", err)
		os.Exit(1)
	}
	setRunNames()

	// SIGINT/SIGTERM: t.Cleanup does not run when the test binary is interrupted, so tear down
	// here and exit; the registry holds everything started so far.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: tearing the cluster down\n", s)
		registry.teardownAll()
		os.Exit(130)
	}()

	// `go test -timeout` ends the binary with a panic that skips every cleanup path; tear the
	// cluster down shortly before that happens, so even a hung run leaves nothing behind.
	flag.Parse()
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			margin := min(60*time.Second, d/5)
			time.AfterFunc(d-margin, func() {
				fmt.Fprintf(os.Stderr, "e2e: the -timeout (%v) is near: tearing the cluster down\n", d)
				registry.teardownAll()
			})
		}
	}

	code := m.Run()
	registry.teardownAll()
	os.Exit(code)
}
