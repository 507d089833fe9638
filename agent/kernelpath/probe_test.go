package kernelpath

import (
	"testing"

	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
)

// TestProbe runs the probe in a fresh namespace (no Docker rules, nothing loaded by anyone
// else there) and expects this kernel to support the kernel path.
func TestProbe(t *testing.T) {
	ns := overlaytest.Namespace(t, "nnkp-probe-"+randomID())
	r := Probe(ProbeConfig{NetNS: int(ns)})
	if !r.OK {
		t.Fatalf("kernel path unavailable here: %s", r.Reason)
	}
}
