package overlay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Batch groups. Deleting a device costs the kernel an RTNL hold and RCU grace periods (about
// 20-40 ms on a loaded 2-core host), and deletes requested one by one are paid one by one. One
// RTM_DELLINK naming a group unregisters every device of the group in one batch
// (unregister_netdevice_many), for roughly the price of one. TeardownBatch therefore moves the
// devices of all the ends it removes into a fresh group of this range and deletes that group.
//
// The range is nullnet's like GroupFor's: a device moved here with no alias yet (caught between
// create and mark) is still recognised as nullnet's by its name and this group, so a crash
// between the move and the delete leaves nothing Cleanup would not find.
const (
	batchGroupBase uint32 = 0x6f000000
	batchGroupMask uint32 = 0x00ffffff
)

// batchSeq numbers batch groups. It starts at a random value so two Managers working in one
// namespace (two agents on one host, tests) do not pick the same group at the same time.
var batchSeq atomic.Uint32

func init() { batchSeq.Store(rand.Uint32()) }

// isBatchGroup reports whether g is one of TeardownBatch's temporary groups.
func isBatchGroup(g uint32) bool { return g&^batchGroupMask == batchGroupBase }

// nextBatchGroup returns a fresh batch group. Meeting a group in use is harmless: every
// device in a batch group is on its way out (or a crashed run's leftover, which Cleanup would
// delete anyway), so no listing is spent on checking.
func nextBatchGroup() uint32 { return batchGroupBase | batchSeq.Add(1)&batchGroupMask }

// TeardownBatch removes several ends as Teardown would, deleting all their devices with one
// request (see batchGroupBase). errs[i] is the result for ends[i], as Teardown would report
// it: nil when the end is gone (or was never there). When the batched delete fails, every end
// in it is torn down on its own, so each result is what happened to that end.
func (m *Manager) TeardownBatch(ctx context.Context, ends []EndRef) []error {
	errs := make([]error, len(ends))
	first := map[EndRef]int{} // the first index of each end; repeats share its result
	var ids []uint32
	for i, e := range ends {
		key := EndRef{NetID: e.NetID, Side: e.Side}
		if err := ValidateNetID(e.NetID); err != nil {
			errs[i] = fmt.Errorf("overlay: teardown: %w", err)
			continue
		}
		if !e.Side.Valid() {
			errs[i] = fmt.Errorf("overlay: teardown: invalid side %d", int(e.Side))
			continue
		}
		if _, dup := first[key]; dup {
			continue
		}
		first[key] = i
		ids = append(ids, e.NetID)
	}
	// Locks are taken in ascending id order, so two batches cannot deadlock; Setup and
	// Teardown hold one lock at a time.
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	ids = dedupe(ids)
	m.gate.Lock() // see Manager.gate
	defer m.gate.Unlock()
	for _, id := range ids {
		unlock := m.lock(id)
		defer unlock()
	}

	res := make([]error, len(ends))
	m.teardownLocked(ctx, first, res)
	for i, e := range ends {
		j, ok := first[EndRef{NetID: e.NetID, Side: e.Side}]
		if ok && res[j] != nil {
			errs[i] = fmt.Errorf("overlay: teardown net %d %s end: %w", e.NetID, e.Side, res[j])
		}
	}
	return errs
}

// teardownLocked does TeardownBatch's work for the ends listed in first; the caller holds
// their ids' locks. It fills errs[first[e]].
func (m *Manager) teardownLocked(ctx context.Context, first map[EndRef]int, errs []error) {
	if err := ctx.Err(); err != nil {
		for _, i := range first {
			errs[i] = err
		}
		return
	}
	if len(first) == 1 {
		// Nothing to batch: the end's own group is deleted directly (one request fewer).
		for e, i := range first {
			errs[i] = m.teardown(e.NetID, e.Side)
		}
		return
	}
	g := nextBatchGroup()
	start := time.Now()
	var batched []EndRef // ends whose devices are all in g
	var parked []*spare  // their bridges, to pool once the batch is gone
	moved := 0
	for e, i := range first {
		links, lookupErr := m.endLinks(e.NetID, e.Side)
		ok := true
		for _, l := range links {
			if l.Attrs().Name == NamesFor(e.NetID, e.Side).Bridge && l.Type() == "bridge" && m.reserveSpare() {
				// Parked instead of deleted (spare.go); its ports go with the batch, and it
				// becomes a spare after that.
				s, err := m.park(l)
				lookupErr = errors.Join(lookupErr, err)
				parked = append(parked, s)
				continue
			}
			err := m.h.LinkSetGroup(l, int(g))
			if err == nil {
				moved++
				continue
			}
			if !errors.Is(err, unix.ENODEV) {
				ok = false // torn down on its own below
			}
		}
		errs[i] = lookupErr
		if ok {
			batched = append(batched, e)
		} else {
			errs[i] = errors.Join(errs[i], m.teardown(e.NetID, e.Side))
		}
	}
	if moved == 0 {
		m.logIfErr(m.pool(parked, nil))
		return
	}
	prepared := time.Now()
	err := m.deleteGroup(g)
	m.logIfErr(m.pool(parked, err))
	m.logger.Debug("batched teardown", "ends", len(first), "devices", moved, "group", fmt.Sprintf("%#x", g),
		"prepare", prepared.Sub(start), "delete", time.Since(prepared))
	if err != nil {
		m.logger.Warn("batched teardown failed; removing the ends one by one", "ends", len(batched),
			"error", opErr("delete group", fmt.Sprintf("%#x", g), err))
		for _, e := range batched {
			i := first[e]
			errs[i] = errors.Join(errs[i], m.teardown(e.NetID, e.Side))
		}
	}
}

func (m *Manager) logIfErr(err error) {
	if err != nil {
		m.logger.Warn("deleting bridges that could not become spares failed", "error", err)
	}
}

// endLinks returns end (id, side)'s devices that are nullnet's, and an error naming each
// device that has one of the end's names but is not nullnet's (left alone).
func (m *Manager) endLinks(id uint32, side Side) ([]netlink.Link, error) {
	n := NamesFor(id, side)
	var errs []error
	var ours []netlink.Link
	for _, name := range []string{n.VXLAN, n.Veth, n.Bridge} {
		l, err := m.linkByName(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if l == nil {
			continue
		}
		if !owned(l, id, side) {
			errs = append(errs, opErr("delete", name, fmt.Errorf("alias %q: %w", l.Attrs().Alias, ErrNotOurs)))
			continue
		}
		ours = append(ours, l)
	}
	return ours, errors.Join(errs...)
}

func dedupe(s []uint32) []uint32 {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
