// Package overlay builds and removes the kernel side of nullnet's tunnels: one bridge and one
// VXLAN device per tunnel end (or a veth pair between two bridges when both ends live on one
// host), created in-process with netlink and marked so that start-up cleanup removes what nullnet
// left behind and nothing else.
//
// This file is the pure part: the address plan and the device names. Both are facts shared with
// the server (which derives the upstream address from them), so they are plain functions that
// tests call directly.
package overlay

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Net id bounds. Net id N owns the /29 at 10.0.0.0 + N*8; the lowest ids are kept out of use as
// upstream did (10.0.0.0/22 stays free for other uses), and 2,097,151 is the last /29 in 10/8.
const (
	MinNetID uint32 = 101
	MaxNetID uint32 = 2097151
)

// VXLANPort is the IANA VXLAN port every tunnel uses.
const VXLANPort = 4789

// VXLANOverhead is what VXLAN over IPv4 adds to each frame (outer IP 20 + UDP 8 + VXLAN 8 +
// inner Ethernet 14); the overlay MTU is the underlay MTU minus this.
const VXLANOverhead = 50

// DefaultUnderlayMTU is assumed when the underlay interface cannot be found.
const DefaultUnderlayMTU = 1500

// Side says which end of a tunnel a device belongs to.
type Side int

const (
	// SideService is the service host's end: bridge address +2, inner address +1.
	SideService Side = iota + 1
	// SideProxy is the proxy host's end: bridge address +4, inner address +3.
	SideProxy
)

// String is the side as used in markers, logs and events.
func (s Side) String() string {
	switch s {
	case SideService:
		return "service"
	case SideProxy:
		return "proxy"
	}
	return "side(" + strconv.Itoa(int(s)) + ")"
}

// Suffix is the side's letter in device names. The proxy side is "c" (upstream's "client").
func (s Side) Suffix() string {
	switch s {
	case SideService:
		return "s"
	case SideProxy:
		return "c"
	}
	return "?"
}

// Peer is the other end.
func (s Side) Peer() Side {
	if s == SideService {
		return SideProxy
	}
	return SideService
}

// Valid reports whether s is one of the two sides.
func (s Side) Valid() bool { return s == SideService || s == SideProxy }

// ParseSide accepts the String form.
func ParseSide(v string) (Side, error) {
	switch v {
	case "service":
		return SideService, nil
	case "proxy":
		return SideProxy, nil
	}
	return 0, fmt.Errorf("unknown overlay side %q (want \"service\" or \"proxy\")", v)
}

// ValidateNetID rejects ids outside MinNetID..MaxNetID.
func ValidateNetID(id uint32) error {
	if id < MinNetID || id > MaxNetID {
		return fmt.Errorf("net id %d is outside %d-%d", id, MinNetID, MaxNetID)
	}
	return nil
}

// Plan is the address block of one net id.
type Plan struct {
	NetID uint32
	// Block is the /29 the net id owns.
	Block netip.Prefix
	// ServiceInner (+1) is for a workload in its own namespace on the service host.
	ServiceInner netip.Prefix
	// ServiceBridge (+2) is the service host's bridge: the upstream for a host service.
	ServiceBridge netip.Prefix
	// ProxyInner (+3) is for a workload in its own namespace on the proxy host.
	ProxyInner netip.Prefix
	// ProxyBridge (+4) is the proxy host's bridge: the source of proxied connections.
	ProxyBridge netip.Prefix
}

// PlanFor computes the address block of net id id.
func PlanFor(id uint32) (Plan, error) {
	if err := ValidateNetID(id); err != nil {
		return Plan{}, err
	}
	base := uint32(10)<<24 + id*8
	at := func(off uint32) netip.Prefix {
		v := base + off
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 29)
	}
	return Plan{
		NetID:         id,
		Block:         at(0),
		ServiceInner:  at(1),
		ServiceBridge: at(2),
		ProxyInner:    at(3),
		ProxyBridge:   at(4),
	}, nil
}

// Bridge is the bridge address (with its /29) of one side.
func (p Plan) Bridge(s Side) netip.Prefix {
	if s == SideService {
		return p.ServiceBridge
	}
	return p.ProxyBridge
}

// Inner is the in-namespace address (with its /29) of one side.
func (p Plan) Inner(s Side) netip.Prefix {
	if s == SideService {
		return p.ServiceInner
	}
	return p.ProxyInner
}

// Upstream is the address a proxy dials for a host service behind net id id (+2).
func Upstream(id uint32) (netip.Addr, error) {
	p, err := PlanFor(id)
	if err != nil {
		return netip.Addr{}, err
	}
	return p.ServiceBridge.Addr(), nil
}

// Names are the devices of one end. The longest, "br_2097151_s", is 12 bytes: inside IFNAMSIZ
// (16 with the NUL, so 15 usable).
type Names struct {
	Bridge string // br_N_s | br_N_c
	VXLAN  string // vx_N_s | vx_N_c
	// Veth is this end of the same-host veth pair (vp_N_s | vp_N_c); its peer is the other
	// side's Veth.
	Veth string
}

// NamesFor returns the device names of one end.
func NamesFor(id uint32, s Side) Names {
	n := strconv.FormatUint(uint64(id), 10) + "_" + s.Suffix()
	return Names{Bridge: "br_" + n, VXLAN: "vx_" + n, Veth: "vp_" + n}
}

// GroupFor is the device group (IFLA_GROUP, "ip link ... group") of the devices of end
// (id, side): 0x6e000000 | id<<1 | side bit, unique per end and far above the small group
// numbers people assign by hand. It serves twice: the kernel takes the group in the create
// request itself (the alias needs a second request), so a device caught between the two is
// still recognisable as nullnet's; and one RTM_DELLINK for the group removes all of an end's
// devices in one batch, which halves teardown time.
func GroupFor(id uint32, s Side) uint32 {
	g := uint32(0x6e)<<24 | id<<1
	if s == SideProxy {
		g |= 1
	}
	return g
}

// MarkerPrefix starts the alias (IFLA_IFALIAS) of every device nullnet creates.
const MarkerPrefix = "nullnet:"

// Marker is the alias that marks a device as part of end (id, side): "nullnet:<id>:<side>".
func Marker(id uint32, s Side) string {
	return MarkerPrefix + strconv.FormatUint(uint64(id), 10) + ":" + s.String()
}

// ParseMarker reads a Marker back; ok is false for anything nullnet did not write.
func ParseMarker(alias string) (id uint32, s Side, ok bool) {
	rest, found := strings.CutPrefix(alias, MarkerPrefix)
	if !found {
		return 0, 0, false
	}
	idStr, sideStr, found := strings.Cut(rest, ":")
	if !found {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(idStr, 10, 32)
	if err != nil || ValidateNetID(uint32(v)) != nil {
		return 0, 0, false
	}
	side, err := ParseSide(sideStr)
	if err != nil {
		return 0, 0, false
	}
	return uint32(v), side, true
}

// ParseName reads a device name NamesFor produces back into its net id and side.
func ParseName(name string) (id uint32, s Side, ok bool) {
	if len(name) < 3 || (name[:3] != "br_" && name[:3] != "vx_" && name[:3] != "vp_") {
		return 0, 0, false
	}
	idStr, suffix, found := strings.Cut(name[3:], "_")
	if !found {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(idStr, 10, 32)
	if err != nil || ValidateNetID(uint32(v)) != nil || strconv.FormatUint(v, 10) != idStr {
		return 0, 0, false
	}
	switch suffix {
	case "s":
		s = SideService
	case "c":
		s = SideProxy
	default:
		return 0, 0, false
	}
	return uint32(v), s, true
}

// OverlayMTU is the MTU of the tunnel devices for an underlay MTU (0 = unknown).
func OverlayMTU(underlayMTU int) int {
	if underlayMTU <= 0 {
		underlayMTU = DefaultUnderlayMTU
	}
	return underlayMTU - VXLANOverhead
}
