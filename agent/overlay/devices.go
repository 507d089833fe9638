package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// This file holds the kernel requests: building an end and the small netlink helpers.

// create builds end e from nothing, removing what it made if a step fails.
func (m *Manager) create(ctx context.Context, e End, bridgeAddr netip.Prefix) (err error) {
	n := NamesFor(e.NetID, e.Side)
	marker := Marker(e.NetID, e.Side)
	// Everything create makes for the end is in the end's group, so one group delete rolls a
	// failed setup back, including a device the kernel created before a later step of the
	// same request failed.
	defer func() {
		if err == nil {
			return
		}
		if derr := m.deleteGroup(GroupFor(e.NetID, e.Side)); derr != nil {
			m.logger.Error("rolling back a failed setup left devices behind", "net_id", e.NetID, "side", e.Side,
				"error", opErr("delete group of", n.Bridge, derr))
		}
	}()
	attrs := func(name string, master int) netlink.LinkAttrs {
		a := netlink.NewLinkAttrs()
		// The kernel ignores IFLA_IFALIAS in a create request; its group marks the device until
		// mark sets the alias.
		a.Name, a.MTU, a.Group, a.Flags, a.MasterIndex = name, e.MTU, GroupFor(e.NetID, e.Side), net.FlagUp, master
		return a
	}
	mark := func(l netlink.Link) error {
		return opErr("mark", l.Attrs().Name, m.h.LinkSetAlias(l, marker))
	}

	br, err := m.bridge(e, n.Bridge, marker, attrs(n.Bridge, 0))
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: ipNet(bridgeAddr)}
	if err := m.h.AddrAdd(br, addr); err != nil {
		return opErr("add address "+bridgeAddr.String()+" to", n.Bridge, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	if !e.SameHost() {
		vx := &netlink.Vxlan{
			LinkAttrs: attrs(n.VXLAN, br.Attrs().Index),
			VxlanId:   int(e.NetID),
			SrcAddr:   net.IP(e.Local.AsSlice()),
			Group:     net.IP(e.Remote.AsSlice()),
			Port:      VXLANPort,
			Learning:  true,
			// 0 = no "dev": the kernel routes the encapsulated packets.
			VtepDevIndex: e.parentIndex,
		}
		// LinkAdd creates the device, then enslaves it in a second request.
		if err := m.h.LinkAdd(vx); err != nil {
			return opErr("create vxlan", n.VXLAN, err)
		}
		return mark(vx)
	}

	// Same host: the end set up second joins the bridges.
	pn := NamesFor(e.NetID, e.Side.Peer())
	peerBr, err := m.linkByName(pn.Bridge)
	if err != nil || peerBr == nil {
		return err
	}
	if !owned(peerBr, e.NetID, e.Side.Peer()) {
		return opErr("attach to", pn.Bridge, ErrNotOurs)
	}
	// A leftover peer veth (its own end was deleted) must go before the pair is recreated.
	if old, err := m.linkByName(pn.Veth); err != nil {
		return err
	} else if old != nil {
		if !owned(old, e.NetID, e.Side.Peer()) {
			return opErr("replace", pn.Veth, ErrNotOurs)
		}
		if err := m.delLink(old); err != nil {
			return err
		}
	}
	vp := &netlink.Veth{LinkAttrs: attrs(n.Veth, br.Attrs().Index), PeerName: pn.Veth, PeerMTU: uint32(e.MTU), PeerTxQLen: -1}
	if err := m.h.LinkAdd(vp); err != nil {
		return opErr("create veth pair to "+pn.Veth+" from", n.Veth, err)
	}
	if err := mark(vp); err != nil {
		return err
	}
	peer, err := m.linkByName(pn.Veth)
	if err != nil {
		return err
	}
	if peer == nil {
		return opErr("find", pn.Veth, unix.ENODEV)
	}
	if err := m.h.LinkSetAlias(peer, Marker(e.NetID, e.Side.Peer())); err != nil {
		return opErr("mark", pn.Veth, err)
	}
	if err := m.h.LinkSetMasterByIndex(peer, peerBr.Attrs().Index); err != nil {
		return opErr("attach to "+pn.Bridge, pn.Veth, err)
	}
	if err := m.h.LinkSetUp(peer); err != nil {
		return opErr("bring up", pn.Veth, err)
	}
	return nil
}

// bridge makes the end's bridge, up, marked, with the end's MTU pinned: a spare renamed into
// the end when there is one (one request), otherwise a new one.
func (m *Manager) bridge(e End, name, marker string, attrs netlink.LinkAttrs) (netlink.Link, error) {
	if br, ok := m.unpark(name, marker, attrs.Group, e.MTU); ok {
		return br, nil
	}
	br := &netlink.Bridge{LinkAttrs: attrs}
	br.MTU = 0 // set below, see there
	if err := m.h.LinkAdd(br); err != nil {
		return nil, opErr("create bridge", name, err)
	}
	if err := m.h.LinkSetAlias(br, marker); err != nil {
		return br, opErr("mark", name, err)
	}
	// An MTU set through a change request pins it (the create request's MTU does not, and a
	// change to the current value is ignored): otherwise the bridge follows its ports and falls
	// back to 1500 whenever it has none (e.g. after the same-host peer left). A spare keeps the
	// pin and takes the new MTU in the request that renames it.
	if err := m.h.LinkSetMTU(br, e.MTU); err != nil {
		return br, opErr(fmt.Sprintf("set MTU %d on", e.MTU), name, err)
	}
	return br, nil
}

// linkByName returns nil, nil when the device does not exist.
func (m *Manager) linkByName(name string) (netlink.Link, error) {
	l, err := m.h.LinkByName(name)
	if err == nil {
		return l, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	return nil, opErr("look up", name, err)
}

// delLink deletes a device; one that is already gone counts as deleted.
func (m *Manager) delLink(l netlink.Link) error {
	err := m.h.LinkDel(l)
	if err == nil || errors.Is(err, unix.ENODEV) {
		return nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return opErr("delete", l.Attrs().Name, err)
}

// deleteGroup removes every device in group g with one RTM_DELLINK, so the kernel unregisters
// them in one batch (one set of RCU grace periods instead of one per device). No device in the
// group is not an error.
func (m *Manager) deleteGroup(g uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: m.sh}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(g)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ipEqual(ip net.IP, a netip.Addr) bool {
	b, ok := netip.AddrFromSlice(ip)
	return ok && b.Unmap() == a
}
