package kernelpath

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
)

// TestProbe runs the probe in a fresh namespace (no Docker rules, nothing loaded by anyone
// else there) and expects this kernel to support the kernel path.
func TestProbe(t *testing.T) {
	ns := overlaytest.Namespace(t, "nnkp-probe-"+randomID())
	start := time.Now()
	r := Probe(ProbeConfig{NetNS: int(ns)})
	t.Logf("probe took %v", time.Since(start))
	if !r.OK {
		t.Fatalf("kernel path unavailable here: %s", r.Reason)
	}
}

// TestProbeReason: when the probe cannot work, it says where it failed (here: the namespace fd
// is not a network namespace, as a broken configuration would give).
func TestProbeReason(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := Probe(ProbeConfig{NetNS: int(f.Fd())})
	if r.OK || !strings.Contains(r.Reason, "nftables") {
		t.Fatalf("probe in a non-namespace: %+v, want not OK with an nftables reason", r)
	}
	t.Logf("reason: %s", r.Reason)
}
