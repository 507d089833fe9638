package overlay_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/vishvananda/netlink"
)

const batchPrefix = "nnbt"

// setupEnds builds n VXLAN ends (service side) from overlay.MinNetID+base and returns them.
func setupEnds(t testing.TB, m *overlay.Manager, h *overlaytest.Host, base, n int) []overlay.EndRef {
	t.Helper()
	peer := netip.MustParseAddr("192.168.77.200")
	ends := make([]overlay.EndRef, n)
	for i := range ends {
		id := overlay.MinNetID + uint32(base+i)
		if _, err := m.Setup(context.Background(), overlay.End{NetID: id, Side: overlay.SideService, Local: h.Underlay, Remote: peer}); err != nil {
			t.Fatal(err)
		}
		ends[i] = overlay.EndRef{NetID: id, Side: overlay.SideService}
	}
	return ends
}

func TestTeardownBatchRemovesEveryEnd(t *testing.T) {
	h := overlaytest.Hosts(t, batchPrefix, 1)[0]
	m := manager(t, h)
	ctx := context.Background()
	ends := setupEnds(t, m, h, 0, 24)
	// A same-host pair (both sides of one id, joined by veths) goes in the same batch.
	const pair = 7000
	for _, s := range []overlay.Side{overlay.SideService, overlay.SideProxy} {
		if _, err := m.Setup(ctx, overlay.End{NetID: pair, Side: s, Local: h.Underlay, Remote: h.Underlay}); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, overlay.EndRef{NetID: pair, Side: s})
	}
	// Repeats, an end that does not exist and an invalid id get their own results.
	ends = append(ends, ends[0], overlay.EndRef{NetID: 6000, Side: overlay.SideProxy}, overlay.EndRef{NetID: 1, Side: overlay.SideService})
	if got := len(devices(t, h)); got != 24*2+2*2 {
		t.Fatalf("%d devices before the teardown, want %d", got, 24*2+2*2)
	}

	errs := m.TeardownBatch(ctx, ends)
	if len(errs) != len(ends) {
		t.Fatalf("%d results for %d ends", len(errs), len(ends))
	}
	for i, err := range errs[:len(errs)-1] {
		if err != nil {
			t.Errorf("end %d (%+v): %v", i, ends[i], err)
		}
	}
	if errs[len(errs)-1] == nil {
		t.Error("an invalid net id was accepted")
	}
	if left := devices(t, h); len(left) != 0 {
		t.Fatalf("devices left after the batched teardown: %v", left)
	}
	if got, err := m.Ends(); err != nil || len(got) != 0 {
		t.Fatalf("ends after teardown: %v, %v", got, err)
	}
}

func TestTeardownBatchLeavesForeignDevices(t *testing.T) {
	h := overlaytest.Hosts(t, batchPrefix, 1)[0]
	m := manager(t, h)
	ends := setupEnds(t, m, h, 0, 3)
	// Someone else's bridge with the name of end 3: reported, never touched.
	foreign := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	foreignID := overlay.MinNetID + 3
	foreign.Name = overlay.NamesFor(foreignID, overlay.SideService).Bridge
	if err := h.Handle(t).LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	ends = append(ends, overlay.EndRef{NetID: foreignID, Side: overlay.SideService})

	errs := m.TeardownBatch(context.Background(), ends)
	for i, err := range errs[:3] {
		if err != nil {
			t.Errorf("end %d: %v", i, err)
		}
	}
	if !errors.Is(errs[3], overlay.ErrNotOurs) {
		t.Fatalf("foreign device: %v, want ErrNotOurs", errs[3])
	}
	if left := devices(t, h); !slices.Equal(left, []string{foreign.Name}) {
		t.Fatalf("devices left: %v, want only %s", left, foreign.Name)
	}
}

// When the batched delete fails (here: the kernel refuses to delete a group holding "lo"),
// every end is torn down on its own, so each result is still true.
func TestTeardownBatchFallsBackPerEnd(t *testing.T) {
	h := overlaytest.Hosts(t, batchPrefix, 1)[0]
	var logs strings.Builder
	m, err := overlay.New(overlay.Config{NetNS: h.NS, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ends := setupEnds(t, m, h, 0, 5)
	hh := h.Handle(t)
	lo, err := hh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkSetGroup(lo, int(overlay.PeekBatchGroup())); err != nil {
		t.Fatal(err)
	}
	errs := m.TeardownBatch(context.Background(), ends)
	for i, err := range errs {
		if err != nil {
			t.Errorf("end %d: %v", i, err)
		}
	}
	if left := devices(t, h); len(left) != 0 {
		t.Fatalf("devices left after the fallback: %v", left)
	}
	if !strings.Contains(logs.String(), "batched teardown failed") {
		t.Fatalf("the batched delete did not fail, so the fallback was not tested; log:\n%s", logs.String())
	}
	if lo, err := hh.LinkByName("lo"); err != nil {
		t.Fatalf("lo is gone: %v", err)
	} else if !overlay.IsBatchGroup(lo.Attrs().Group) {
		t.Fatalf("lo's group changed to %#x", lo.Attrs().Group)
	}
}

// A crash between moving devices into a batch group and deleting the group leaves devices that
// Cleanup must still recognise, including one caught before its marker was set; a device of
// someone else in a batch-range group stays.
func TestCleanupRemovesDevicesInBatchGroups(t *testing.T) {
	h := overlaytest.Hosts(t, batchPrefix, 1)[0]
	m := manager(t, h)
	ends := setupEnds(t, m, h, 0, 4)
	hh := h.Handle(t)
	g := int(overlay.PeekBatchGroup())
	for i, e := range ends {
		n := overlay.NamesFor(e.NetID, e.Side)
		for _, name := range []string{n.Bridge, n.VXLAN} {
			l, err := hh.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 && name == n.VXLAN {
				// Caught between create and mark: no alias, only its name and group.
				if err := hh.LinkSetAlias(l, ""); err != nil {
					t.Fatal(err)
				}
			}
			if err := hh.LinkSetGroup(l, g); err != nil {
				t.Fatal(err)
			}
		}
	}
	other := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	other.Name, other.Group = "keepme0", uint32(g)
	if err := hh.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	removed, err := m.Cleanup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 8 {
		t.Fatalf("cleanup removed %v, want the 8 devices of 4 ends", removed)
	}
	if left := devices(t, h); len(left) != 0 {
		t.Fatalf("devices left after cleanup: %v", left)
	}
	if _, err := hh.LinkByName("keepme0"); err != nil {
		t.Fatalf("cleanup removed a device that is not nullnet's: %v", err)
	}
}

// Batches, single teardowns and setups of other ids run concurrently on one Manager.
func TestTeardownBatchConcurrent(t *testing.T) {
	h := overlaytest.Hosts(t, batchPrefix, 1)[0]
	m := manager(t, h)
	ctx := context.Background()
	ends := setupEnds(t, m, h, 0, 32)
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for k := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, err := range m.TeardownBatch(ctx, ends[k*8:(k+1)*8]) {
				if err != nil {
					errc <- fmt.Errorf("batch %d end %d: %w", k, i, err)
				}
			}
		}()
	}
	peer := netip.MustParseAddr("192.168.77.200")
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := overlay.End{NetID: 5000 + uint32(i), Side: overlay.SideProxy, Local: h.Underlay, Remote: peer}
			if _, err := m.Setup(ctx, e); err != nil {
				errc <- err
				return
			}
			if err := m.Teardown(ctx, e.NetID, e.Side); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if left := devices(t, h); len(left) != 0 {
		t.Fatalf("devices left: %v", left)
	}
}
