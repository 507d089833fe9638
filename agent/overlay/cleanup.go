package overlay

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/vishvananda/netlink"
)

// EndRef names one end.
type EndRef struct {
	NetID uint32 `json:"net_id"`
	Side  Side   `json:"-"`
	// SideName is Side as text, for JSON.
	SideName string `json:"side"`
}

// Cleanup removes every device that carries nullnet's marker (whatever its name), or one of
// its names with the matching group before the marker was set (see GroupFor), and nothing else: what a crashed or killed agent left behind. It runs at start-up, before the first
// command; it returns the names it removed. Ports go before bridges so no bridge is deleted
// while something is still attached to it.
func (m *Manager) Cleanup(ctx context.Context) ([]string, error) {
	links, err := m.listLinks()
	if err != nil {
		return nil, fmt.Errorf("overlay: cleanup: %w", err)
	}
	var ports, bridges []netlink.Link
	for _, l := range links {
		if !ownedAny(l) {
			continue
		}
		if l.Type() == "bridge" {
			bridges = append(bridges, l)
		} else {
			ports = append(ports, l)
		}
	}
	var removed []string
	var errs []error
	for _, l := range append(ports, bridges...) {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := m.delLink(l); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, l.Attrs().Name)
	}
	if len(removed) > 0 {
		m.logger.Info("removed overlay devices left by an earlier run", "count", len(removed), "devices", removed)
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
