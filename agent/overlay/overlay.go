package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config for New.
type Config struct {
	// NetNS is the network namespace the Manager works in. Zero or netns.None() means the
	// namespace of the calling thread when New runs (normally the host's). A Manager never
	// switches threads between namespaces: it keeps a netlink socket opened inside NetNS.
	NetNS netns.NsHandle
	// Logger defaults to a null logger.
	Logger hclog.Logger
	// SpareBridges is how many bridges of torn-down ends are kept, down and detached, for
	// later setups to reuse (see spare.go); 0 deletes every bridge at teardown.
	SpareBridges int
	// SpareIdle is how long a spare waits for reuse before it is deleted; 0 = DefaultSpareIdle.
	SpareIdle time.Duration
}

// Manager builds and removes tunnel ends in one network namespace. It is safe for concurrent
// use: operations on one net id are serialized (the same-host mode touches both sides), other
// net ids proceed in parallel.
type Manager struct {
	h      *netlink.Handle
	sh     *nl.SocketHandle // for requests the netlink package has no call for
	logger hclog.Logger

	mu    sync.Mutex
	locks map[uint32]*idLock

	// gate gives teardowns priority over setups. The kernel serializes both under RTNL and
	// grants the lock to whichever request asks first, so the executor's parallel setups
	// would starve the one teardown batch in a churn: the ends waiting for teardown pile up
	// (and overflow the spare pool into slow deletes). Setups share the gate, a teardown takes
	// it alone; sync.RWMutex stops new setups as soon as a teardown waits.
	gate sync.RWMutex

	spareMax     int
	spareMu      sync.Mutex
	spares       []spare // oldest first
	sparePending int     // bridges being parked

	stop context.CancelFunc // ends the spare reaper
	wg   sync.WaitGroup
}

type idLock struct {
	mu   sync.Mutex
	refs int
}

// New opens a netlink handle in cfg.NetNS.
func New(cfg Config) (*Manager, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	var (
		h   *netlink.Handle
		err error
	)
	if cfg.NetNS > 0 {
		h, err = netlink.NewHandleAt(cfg.NetNS, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("overlay: opening a netlink socket: %w", err)
	}
	ns := netns.None()
	if cfg.NetNS > 0 {
		ns = cfg.NetNS
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("overlay: opening a netlink socket: %w", err)
	}
	m := &Manager{h: h, sh: &nl.SocketHandle{Socket: s}, logger: logger, locks: map[uint32]*idLock{},
		spareMax: cfg.SpareBridges, stop: func() {}}
	if m.spareMax > 0 {
		idle := cfg.SpareIdle
		if idle <= 0 {
			idle = DefaultSpareIdle
		}
		ctx, cancel := context.WithCancel(context.Background())
		m.stop = cancel
		m.wg.Add(1)
		go m.reapLoop(ctx, idle)
	}
	return m, nil
}

// Close stops the spare reaper and releases the netlink sockets. Devices stay, spares too:
// the next start-up Cleanup removes them.
func (m *Manager) Close() {
	m.stop()
	m.wg.Wait()
	m.h.Close()
	m.sh.Close()
}

// End is one end of a tunnel as the server asks for it.
type End struct {
	NetID uint32
	Side  Side
	// Local is this host's underlay address, Remote the peer's. Equal when both ends are on
	// this host: the bridges are then joined with a veth pair instead of VXLAN.
	Local, Remote netip.Addr
	// MTU of the tunnel devices; 0 = the MTU of the underlay interface (Device, or the one
	// holding Local), minus 50.
	MTU int
	// Device, when set, is the underlay interface the VXLAN device is bound to (its "dev");
	// otherwise the kernel routes the encapsulated packets by their destination.
	Device string

	parentIndex int // Device's ifindex, resolved by Setup
}

// SameHost reports whether both ends are on this host.
func (e End) SameHost() bool { return e.Local == e.Remote }

func (e End) validate() error {
	if err := ValidateNetID(e.NetID); err != nil {
		return err
	}
	if !e.Side.Valid() {
		return fmt.Errorf("invalid side %d", int(e.Side))
	}
	if !e.Local.Is4() || !e.Remote.Is4() {
		return fmt.Errorf("underlay addresses must be IPv4 (local %q, remote %q)", e.Local, e.Remote)
	}
	if e.MTU != 0 && (e.MTU < 576 || e.MTU > 65535) {
		return fmt.Errorf("MTU %d is outside 576-65535", e.MTU)
	}
	return nil
}

// Result says what Setup did.
type Result struct {
	// Changed is false when the end already existed with the same parameters.
	Changed bool
	// Replaced is true when an end with other parameters was removed first.
	Replaced bool
	// Bridge is the end's bridge address (+2 service side, +4 proxy side).
	Bridge netip.Prefix
	MTU    int
}

// Setup makes end e exist: a bridge holding the end's address and, to reach the peer, a VXLAN
// device (different hosts) or a veth pair to the peer's bridge (same host; whichever end is set
// up second creates it). It is idempotent: an end that exists with the same parameters is left
// alone; one with different parameters is replaced. A failed setup removes what it created.
func (m *Manager) Setup(ctx context.Context, e End) (Result, error) {
	if err := e.validate(); err != nil {
		return Result{}, fmt.Errorf("overlay: setup: %w", err)
	}
	plan, _ := PlanFor(e.NetID)
	if e.Device != "" {
		parent, err := m.linkByName(e.Device)
		if err != nil {
			return Result{}, fmt.Errorf("overlay: setup net %d %s end: %w", e.NetID, e.Side, err)
		}
		if parent == nil {
			return Result{}, fmt.Errorf("overlay: setup net %d %s end: %w", e.NetID, e.Side,
				opErr("find underlay interface", e.Device, unix.ENODEV))
		}
		e.parentIndex = parent.Attrs().Index
		if e.MTU == 0 {
			e.MTU = OverlayMTU(parent.Attrs().MTU)
		}
	}
	if e.MTU == 0 {
		e.MTU = OverlayMTU(m.UnderlayMTU(e.Local))
	}
	res := Result{Bridge: plan.Bridge(e.Side), MTU: e.MTU}
	m.gate.RLock()
	defer m.gate.RUnlock()
	unlock := m.lock(e.NetID)
	defer unlock()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("overlay: setup net %d %s end: %w", e.NetID, e.Side, err)
	}

	exists, matches, err := m.inspect(e, res.Bridge)
	if err != nil {
		return res, fmt.Errorf("overlay: setup net %d %s end: %w", e.NetID, e.Side, err)
	}
	if matches {
		return res, nil
	}
	res.Changed = true
	if exists {
		res.Replaced = true
		m.logger.Info("replacing tunnel end with different parameters", "net_id", e.NetID, "side", e.Side)
		if err := m.teardown(e.NetID, e.Side); err != nil {
			return res, fmt.Errorf("overlay: setup net %d %s end: removing the old end: %w", e.NetID, e.Side, err)
		}
	}
	if err := m.create(ctx, e, res.Bridge); err != nil {
		return res, fmt.Errorf("overlay: setup net %d %s end: %w", e.NetID, e.Side, err)
	}
	return res, nil
}

// Teardown removes end (id, side). An absent end is not an error; a device with the end's name
// but without nullnet's marker is left alone and reported.
func (m *Manager) Teardown(ctx context.Context, id uint32, side Side) error {
	if err := ValidateNetID(id); err != nil {
		return fmt.Errorf("overlay: teardown: %w", err)
	}
	if !side.Valid() {
		return fmt.Errorf("overlay: teardown: invalid side %d", int(side))
	}
	m.gate.Lock()
	defer m.gate.Unlock()
	unlock := m.lock(id)
	defer unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("overlay: teardown net %d %s end: %w", id, side, err)
	}
	if err := m.teardown(id, side); err != nil {
		return fmt.Errorf("overlay: teardown net %d %s end: %w", id, side, err)
	}
	return nil
}

// teardown deletes the end's devices in one batch (see GroupFor); deleting one end of the
// same-host veth pair deletes the pair. A device with one of the end's names that is not
// nullnet's is left alone and reported. The caller holds the net id's lock.
func (m *Manager) teardown(id uint32, side Side) error {
	n := NamesFor(id, side)
	ours, lookupErr := m.endLinks(id, side)
	if len(ours) == 0 {
		return lookupErr
	}
	errs := []error{lookupErr}
	// The bridge leaves the end's group when it is parked; its ports go with the group,
	// and only then does it become a spare.
	var parked *spare
	if br := bridgeOf(ours, n.Bridge); br != nil && m.reserveSpare() {
		var err error
		parked, err = m.park(br)
		errs = append(errs, err)
		ours = slices.DeleteFunc(ours, func(l netlink.Link) bool { return l == br })
	}
	var portErrs []error
	if err := m.deleteGroup(GroupFor(id, side)); err != nil {
		portErrs = append(portErrs, opErr("delete", n.Bridge+" and its ports", err))
	}
	// A device whose group was changed (by hand, or by a failed TeardownBatch) is not in
	// the end's group; delete it by name.
	for _, l := range ours {
		if l.Attrs().Group != GroupFor(id, side) {
			if err := m.delLink(l); err != nil {
				portErrs = append(portErrs, err)
			}
		}
	}
	portsErr := errors.Join(portErrs...)
	return errors.Join(append(errs, portsErr, m.pool([]*spare{parked}, portsErr))...)
}

// inspect compares what exists for end e with what Setup would build. exists is true when any
// of the end's devices exists; matches when all of them are exactly as wanted.
func (m *Manager) inspect(e End, bridgeAddr netip.Prefix) (exists, matches bool, err error) {
	n := NamesFor(e.NetID, e.Side)
	marker := Marker(e.NetID, e.Side)
	links := map[string]netlink.Link{}
	for _, name := range []string{n.Bridge, n.VXLAN, n.Veth} {
		l, err := m.linkByName(name)
		if err != nil {
			return false, false, err
		}
		if l == nil {
			continue
		}
		if !owned(l, e.NetID, e.Side) {
			return true, false, opErr("inspect", name, fmt.Errorf("alias %q: %w", l.Attrs().Alias, ErrNotOurs))
		}
		if l.Attrs().Alias != marker {
			exists = true // caught between create and mark: replace it
			continue
		}
		links[name] = l
	}
	if len(links) == 0 {
		return exists, false, nil
	}
	br, ok := links[n.Bridge].(*netlink.Bridge)
	if !ok || !linkOK(br, e.MTU, 0) {
		return true, false, nil
	}
	addrs, err := m.addrList(br)
	if err != nil {
		return true, false, opErr("list addresses of", n.Bridge, err)
	}
	if len(addrs) != 1 || prefixOf(addrs[0].IPNet) != bridgeAddr {
		return true, false, nil
	}
	if !e.SameHost() {
		if links[n.Veth] != nil {
			return true, false, nil
		}
		vx, ok := links[n.VXLAN].(*netlink.Vxlan)
		return true, ok && vxlanOK(vx, e, br.Index), nil
	}

	// Same host: no VXLAN; the veth pair exists exactly when the peer's bridge does.
	if links[n.VXLAN] != nil {
		return true, false, nil
	}
	pn := NamesFor(e.NetID, e.Side.Peer())
	peerBr, err := m.linkByName(pn.Bridge)
	if err != nil {
		return true, false, err
	}
	vp := links[n.Veth]
	if peerBr == nil {
		return true, vp == nil, nil
	}
	if vp == nil || !linkOK(vp, e.MTU, br.Index) {
		return true, false, nil
	}
	peerVp, err := m.linkByName(pn.Veth)
	if err != nil {
		return true, false, err
	}
	return true, peerVp != nil && linkOK(peerVp, e.MTU, peerBr.Attrs().Index), nil
}

// owned reports whether l is a device nullnet made for end (id, side): it carries the end's
// marker, or it was caught between create and mark (its group, no alias).
func owned(l netlink.Link, id uint32, side Side) bool {
	a := l.Attrs()
	if a.Alias == Marker(id, side) {
		return true
	}
	nid, nside, ok := ParseName(a.Name)
	// A spare alias on an end's name: parking was interrupted after its first step.
	return ok && nid == id && nside == side && (a.Alias == spareAlias ||
		a.Alias == "" && (a.Group == GroupFor(id, side) || isBatchGroup(a.Group)))
}

// ownedAny reports whether l is any device nullnet made.
func ownedAny(l netlink.Link) bool {
	a := l.Attrs()
	if _, _, ok := ParseMarker(a.Alias); ok {
		return true
	}
	if isSpare(l) {
		return true
	}
	id, side, ok := ParseName(a.Name)
	return a.Alias == "" && ok && (a.Group == GroupFor(id, side) || a.Group == cleanupGroup || isBatchGroup(a.Group))
}

func linkOK(l netlink.Link, mtu, master int) bool {
	a := l.Attrs()
	return a.MTU == mtu && a.Flags&net.FlagUp != 0 && a.MasterIndex == master
}

func vxlanOK(vx *netlink.Vxlan, e End, master int) bool {
	return linkOK(vx, e.MTU, master) && vx.VxlanId == int(e.NetID) && vx.Port == VXLANPort && vx.Learning &&
		vx.VtepDevIndex == e.parentIndex &&
		ipEqual(vx.SrcAddr, e.Local) && ipEqual(vx.Group, e.Remote)
}

// UnderlayMTU is the MTU of the interface holding addr, or 0 when no interface holds it.
func (m *Manager) UnderlayMTU(addr netip.Addr) int {
	addrs, err := m.h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return 0
	}
	for _, a := range addrs {
		if ipEqual(a.IP, addr) {
			if l, err := m.h.LinkByIndex(a.LinkIndex); err == nil {
				return l.Attrs().MTU
			}
		}
	}
	return 0
}

// InterfaceMTU is the MTU of the named interface, or 0 when it does not exist.
func (m *Manager) InterfaceMTU(name string) int {
	l, err := m.linkByName(name)
	if err != nil || l == nil {
		return 0
	}
	return l.Attrs().MTU
}

func (m *Manager) lock(id uint32) (unlock func()) {
	m.mu.Lock()
	l := m.locks[id]
	if l == nil {
		l = &idLock{}
		m.locks[id] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(m.locks, id)
		}
		m.mu.Unlock()
	}
}
