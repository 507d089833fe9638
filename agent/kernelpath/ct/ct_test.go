package ct

import (
	"context"
	"net/netip"
	"testing"
)

// Mark 0 is every flow nobody marked (all of the host's traffic): no call may select it. The
// real-kernel tests of this package run in agent/kernelpath (traffic_test.go, flush_test.go),
// which build the namespaces and the nftables table that mark flows.
func TestMarkZeroRefused(t *testing.T) {
	tb := &Table{} // the checks come before any netlink use
	if _, err := tb.Marked(0); err == nil {
		t.Error("Marked(0) accepted")
	}
	if err := tb.Flush(0); err == nil {
		t.Error("Flush(0) accepted")
	}
	if _, err := tb.FlushClient(0, 6, netip.MustParseAddr("10.0.0.1"), 80); err == nil {
		t.Error("FlushClient(0) accepted")
	}
	if _, err := Follow(context.Background(), FollowConfig{}); err == nil {
		t.Error("Follow without a mark filter accepted")
	}
}
