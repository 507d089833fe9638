package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
)

// Recovery at start-up. The kernel keeps carrying a tunnel while the agent that built it is
// down (a crash, kill -9, an upgrade): removing every marked device at start would cut every
// live connection of the host. Recover keeps the ends that are complete and reports them, so
// that the agent can tell the server (Hello.active_ends) and the server can keep those it still
// has sessions for and ask for the removal of the others. Everything else nullnet owns (spare
// bridges, ends caught half-built or half-removed, devices in a cleanup or batch group) is
// removed, as Cleanup does.

// RecoveredEnd is a complete end found in the kernel.
type RecoveredEnd struct {
	EndRef
	// Local and Remote are the VXLAN device's underlay addresses; zero for a same-host end
	// (a veth pair names no underlay).
	Local, Remote netip.Addr
	SameHost      bool
	Bridge        netip.Prefix
	MTU           int
}

// Recover keeps every complete end and removes every other device nullnet owns. It runs at
// start-up, before the first command; it returns the ends kept (sorted by net id, then side)
// and the names of the devices removed.
func (m *Manager) Recover(ctx context.Context) ([]RecoveredEnd, []string, error) {
	links, err := m.listLinks()
	if err != nil {
		return nil, nil, fmt.Errorf("overlay: recover: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	keep := map[int]bool{}
	var ends []RecoveredEnd
	for _, l := range links {
		id, side, ok := ParseMarker(l.Attrs().Alias)
		if !ok || l.Type() != "bridge" || l.Attrs().Name != NamesFor(id, side).Bridge {
			continue
		}
		e, devices, ok := m.completeEnd(l, id, side, byName)
		if !ok {
			continue
		}
		ends = append(ends, e)
		for _, i := range devices {
			keep[i] = true
		}
	}
	sort.Slice(ends, func(i, j int) bool {
		if ends[i].NetID != ends[j].NetID {
			return ends[i].NetID < ends[j].NetID
		}
		return ends[i].Side < ends[j].Side
	})
	removed, err := m.cleanup(ctx, links, keep)
	if len(ends) > 0 {
		m.logger.Info("kept tunnel ends an earlier run built", "count", len(ends))
	}
	return ends, removed, err
}

// completeEnd checks that br, the marked bridge of end (id, side), is up with the plan's
// address and has the end's marked VXLAN device (or same-host veth) attached and up. It
// returns the end and the indexes of its devices.
func (m *Manager) completeEnd(br netlink.Link, id uint32, side Side, byName map[string]netlink.Link) (RecoveredEnd, []int, bool) {
	n := NamesFor(id, side)
	plan, _ := PlanFor(id)
	ba := br.Attrs()
	if ba.Flags&net.FlagUp == 0 {
		return RecoveredEnd{}, nil, false
	}
	addrs, err := m.addrList(br)
	if err != nil || len(addrs) != 1 || prefixOf(addrs[0].IPNet) != plan.Bridge(side) {
		return RecoveredEnd{}, nil, false
	}
	e := RecoveredEnd{EndRef: EndRef{NetID: id, Side: side, SideName: side.String()}, Bridge: plan.Bridge(side), MTU: ba.MTU}
	port := func(name string) netlink.Link {
		l := byName[name]
		if l == nil {
			return nil
		}
		a := l.Attrs()
		if a.Alias != Marker(id, side) || a.MasterIndex != ba.Index || a.Flags&net.FlagUp == 0 {
			return nil
		}
		return l
	}
	if vx, ok := port(n.VXLAN).(*netlink.Vxlan); ok && vx.VxlanId == int(id) {
		local, okL := netip.AddrFromSlice(vx.SrcAddr)
		remote, okR := netip.AddrFromSlice(vx.Group)
		if !okL || !okR || !local.Unmap().Is4() || !remote.Unmap().Is4() {
			return RecoveredEnd{}, nil, false
		}
		e.Local, e.Remote = local.Unmap(), remote.Unmap()
		return e, []int{ba.Index, vx.Index}, true
	}
	if vp := port(n.Veth); vp != nil && vp.Type() == "veth" {
		e.SameHost = true
		return e, []int{ba.Index, vp.Attrs().Index}, true
	}
	return RecoveredEnd{}, nil, false
}
