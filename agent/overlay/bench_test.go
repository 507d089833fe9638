package overlay_test

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
)

// BenchmarkSetupTeardown builds b.N tunnel ends (service side, VXLAN to a peer) one after the
// other in a fresh namespace, then tears them all down, and reports per-end latency (p50, p99)
// and setups per second. `make bench` runs it with -benchtime=500x. Upstream, with shell
// scripts, measured 61.9 ms per setup and 119.3 ms per teardown.
func BenchmarkSetupTeardown(b *testing.B) {
	h := overlaytest.Hosts(b, prefix, 1)[0]
	m := manager(b, h)
	ctx := context.Background()
	peer := netip.MustParseAddr("192.168.77.200")
	setup := make([]time.Duration, 0, b.N)
	teardown := make([]time.Duration, 0, b.N)

	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := m.Setup(ctx, overlay.End{NetID: overlay.MinNetID + uint32(i), Side: overlay.SideService, Local: h.Underlay, Remote: peer}); err != nil {
			b.Fatal(err)
		}
		setup = append(setup, time.Since(t0))
	}
	setupWall := time.Since(start)
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := m.Teardown(ctx, overlay.MinNetID+uint32(i), overlay.SideService); err != nil {
			b.Fatal(err)
		}
		teardown = append(teardown, time.Since(t0))
	}
	b.StopTimer()

	b.ReportMetric(pct(setup, 50), "setup-p50-ms")
	b.ReportMetric(pct(setup, 99), "setup-p99-ms")
	b.ReportMetric(pct(teardown, 50), "teardown-p50-ms")
	b.ReportMetric(pct(teardown, 99), "teardown-p99-ms")
	b.ReportMetric(float64(b.N)/setupWall.Seconds(), "tunnels/s")
}

func pct(d []time.Duration, p int) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return float64(s[i]) / float64(time.Millisecond)
}

// BenchmarkCleanup leaves b.N ends behind (a crashed agent) and times the start-up cleanup that
// removes them all; it reports the total in milliseconds.
func BenchmarkCleanup(b *testing.B) {
	h := overlaytest.Hosts(b, prefix, 1)[0]
	m := manager(b, h)
	ctx := context.Background()
	peer := netip.MustParseAddr("192.168.77.200")
	for i := 0; i < b.N; i++ {
		if _, err := m.Setup(ctx, overlay.End{NetID: overlay.MinNetID + uint32(i), Side: overlay.SideService, Local: h.Underlay, Remote: peer}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	t0 := time.Now()
	removed, err := m.Cleanup(ctx)
	took := time.Since(t0)
	b.StopTimer()
	if err != nil || len(removed) != 2*b.N {
		b.Fatalf("removed %d devices, %v; want %d", len(removed), err, 2*b.N)
	}
	b.ReportMetric(float64(took)/float64(time.Millisecond), "cleanup-total-ms")
}

// BenchmarkBatchTeardown removes ends with one TeardownBatch per 8, 16 or 64 ends (64 = what
// one node holds in flight under churn), or 64 ends with one Teardown each ("serial"), and
// reports milliseconds per end. The ends are rebuilt, untimed, before each iteration.
func BenchmarkBatchTeardown(b *testing.B) {
	const n = 64
	for _, size := range []int{8, 16, 64, 1} {
		name := fmt.Sprintf("batch-%d", size)
		if size == 1 {
			name = "serial"
		}
		b.Run(name, func(b *testing.B) {
			h := overlaytest.Hosts(b, batchPrefix, 1)[0]
			m := manager(b, h)
			ctx := context.Background()
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ends := setupEnds(b, m, h, 0, n)
				b.StartTimer()
				t0 := time.Now()
				for len(ends) > 0 {
					k := min(size, len(ends))
					if size == 1 {
						if err := m.Teardown(ctx, ends[0].NetID, ends[0].Side); err != nil {
							b.Fatal(err)
						}
					} else {
						for j, err := range m.TeardownBatch(ctx, ends[:k]) {
							if err != nil {
								b.Fatalf("end %d: %v", j, err)
							}
						}
					}
					ends = ends[k:]
				}
				total += time.Since(t0)
			}
			b.StopTimer()
			if left := devices(b, h); len(left) != 0 {
				b.Fatalf("devices left: %v", left)
			}
			b.ReportMetric(float64(total)/float64(b.N*n)/float64(time.Millisecond), "ms/end")
		})
	}
}
