package overlay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// EndRef names one end.
type EndRef struct {
	NetID uint32 `json:"net_id"`
	Side  Side   `json:"-"`
	// SideName is Side as text, for JSON.
	SideName string `json:"side"`
}

// cleanupGroup is where Cleanup gathers leftovers before deleting them in one request; it is
// above every GroupFor value.
const cleanupGroup uint32 = 0x6effffff

// Cleanup removes every device that carries nullnet's marker (whatever its name), or one of
// its names with the matching group before the marker was set (see GroupFor), and nothing
// else: what a crashed or killed agent left behind. It runs at start-up, before the first
// command; it returns the names it removed.
func (m *Manager) Cleanup(ctx context.Context) ([]string, error) {
	links, err := m.listLinks()
	if err != nil {
		return nil, fmt.Errorf("overlay: cleanup: %w", err)
	}
	return m.cleanup(ctx, links, nil)
}

// cleanup removes every device of links that nullnet owns, except those keep holds (by index).
func (m *Manager) cleanup(ctx context.Context, links []netlink.Link, keep map[int]bool) ([]string, error) {
	var ours []netlink.Link
	for _, l := range links {
		if ownedAny(l) && !keep[l.Attrs().Index] {
			ours = append(ours, l)
		}
	}
	// Move every leftover into one group and delete the group with one request, which the
	// kernel unregisters as one batch (the per-device work remains: about 20-40 ms each on
	// 2 cores). Whatever cannot be moved is deleted on its own, ports before bridges.
	var removed, single []string
	var errs []error
	for _, l := range ours {
		if err := m.h.LinkSetGroup(l, int(cleanupGroup)); err != nil {
			single = append(single, l.Attrs().Name)
			continue
		}
		removed = append(removed, l.Attrs().Name)
	}
	if len(removed) > 0 {
		if err := m.deleteGroup(cleanupGroup); err != nil {
			errs = append(errs, opErr("delete", fmt.Sprintf("%d leftover devices", len(removed)), err))
			removed = nil
		}
	}
	sort.SliceStable(single, func(i, j int) bool {
		return !strings.HasPrefix(single[i], "br_") && strings.HasPrefix(single[j], "br_")
	})
	for _, name := range single {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		l, err := m.linkByName(name)
		if err == nil && l != nil {
			err = m.delLink(l)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	if len(removed) > 0 {
		m.logger.Info("removed overlay devices left by an earlier run", "count", len(removed), "devices", removed,
			"kept", len(keep))
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("overlay: cleanup: %w", err)
	}
	return removed, nil
}

// Ends lists the ends that exist in the kernel (one per marked bridge), sorted by net id.
func (m *Manager) Ends() ([]EndRef, error) {
	links, err := m.listLinks()
	if err != nil {
		return nil, fmt.Errorf("overlay: listing ends: %w", err)
	}
	var ends []EndRef
	for _, l := range links {
		id, side, ok := ParseMarker(l.Attrs().Alias)
		if ok && l.Type() == "bridge" && l.Attrs().Name == NamesFor(id, side).Bridge {
			ends = append(ends, EndRef{NetID: id, Side: side, SideName: side.String()})
		}
	}
	sort.Slice(ends, func(i, j int) bool {
		if ends[i].NetID != ends[j].NetID {
			return ends[i].NetID < ends[j].NetID
		}
		return ends[i].Side < ends[j].Side
	})
	return ends, nil
}

// listLinks dumps all devices; a dump interrupted by a concurrent change is retried, because a
// cleanup that misses a device would leave it behind.
func (m *Manager) listLinks() ([]netlink.Link, error) {
	var lastErr error
	for range 5 {
		links, err := m.h.LinkList()
		if err == nil {
			return links, nil
		}
		lastErr = err
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, opErr("list", "links", lastErr)
}

// addrList lists the IPv4 addresses of l (nil: of every device), retrying a dump interrupted
// by a concurrent change: a partial answer would make a complete end look half-built, and
// recovery removes half-built ends.
func (m *Manager) addrList(l netlink.Link) ([]netlink.Addr, error) {
	var lastErr error
	for range 5 {
		addrs, err := m.h.AddrList(l, netlink.FAMILY_V4)
		if err == nil {
			return addrs, nil
		}
		lastErr = err
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, lastErr
}
