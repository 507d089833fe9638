package overlay

import (
	"context"
	"errors"
	"fmt"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Spare bridges. Removing a bridge is the expensive part of a teardown: the kernel waits for
// RCU callbacks (rcu_barrier) while holding RTNL, about 17-20 ms per bridge on a 2-core host,
// and batching does not amortise it; VXLAN devices and veth pairs, by contrast, cost one RCU
// grace period per batched delete. Under churn every setup queues behind those deletes. So a
// torn-down end's bridge is, when the pool has room, stripped (down, addresses removed, ports
// deleted) and renamed to a spare name instead of deleted; the next setup renames a spare
// into its end with one request. Spares unused for SpareIdle are deleted a few at a time.
//
// A spare carries spareAlias and spareGroup, so start-up Cleanup removes spares an earlier run
// left behind, and a device caught between the steps of parking is still recognised as ours.

const (
	// spareAlias marks a parked bridge. It does not parse as a Marker: a spare is no end.
	spareAlias = MarkerPrefix + "spare"
	// spareGroup holds parked bridges; above every GroupFor value, below cleanupGroup.
	spareGroup uint32 = 0x6efffffe
	// spareNamePrefix starts a spare's name ("nnsp_" + 8 hex digits: inside IFNAMSIZ).
	spareNamePrefix = "nnsp_"

	// DefaultSpareBridges is the pool size the agent uses: enough for the swings of a heavy
	// churn (the 2,048-client bench peaks at about 520 spares per node). A spare costs about
	// 45 KiB of kernel memory, so a full pool is about 45 MiB, for at most SpareIdle.
	DefaultSpareBridges = 1024
	// DefaultSpareIdle is how long a spare waits for reuse before it is deleted.
	DefaultSpareIdle = 60 * time.Second
	// spareReapBatch bounds the spares deleted in one request, so setups never wait long for
	// RTNL behind a reap (about 20 ms per bridge).
	spareReapBatch = 8
)

// spare is one parked bridge.
type spare struct {
	index  int
	name   string
	parked time.Time
}

// spareName returns a fresh spare name, from the same random-start sequence as batch groups.
func spareName() string {
	return spareNamePrefix + fmt.Sprintf("%08x", batchSeq.Add(1))
}

// isSpare reports whether l is a parked bridge (by alias, or by name and group when a crash
// left it between the two halves of parking).
func isSpare(l netlink.Link) bool {
	a := l.Attrs()
	return a.Alias == spareAlias || (a.Group == spareGroup && len(a.Name) > len(spareNamePrefix) &&
		a.Name[:len(spareNamePrefix)] == spareNamePrefix)
}

// bridgeOf returns the bridge called name among an end's links, or nil.
func bridgeOf(links []netlink.Link, name string) netlink.Link {
	for _, l := range links {
		if l.Attrs().Name == name && l.Type() == "bridge" {
			return l
		}
	}
	return nil
}

// reserveSpare claims room in the pool for one bridge about to be parked; false when sparing
// is off or the pool is full. A claim ends with parkDone.
func (m *Manager) reserveSpare() bool {
	if m.spareMax <= 0 {
		return false
	}
	m.spareMu.Lock()
	defer m.spareMu.Unlock()
	if len(m.spares)+m.sparePending >= m.spareMax {
		return false
	}
	m.sparePending++
	return true
}

// parkDone ends a claim; s is the parked spare, or nil when parking failed.
func (m *Manager) parkDone(s *spare) {
	m.spareMu.Lock()
	m.sparePending--
	if s != nil {
		m.spares = append(m.spares, *s)
	}
	n := len(m.spares)
	m.spareMu.Unlock()
	if s != nil {
		metrics.SetGauge([]string{"nullnet", "client", "overlay", "spare_bridges"}, float32(n))
	}
}

// takeSpare pops the most recently parked spare (LIFO: the oldest ones age out).
func (m *Manager) takeSpare() (spare, bool) {
	m.spareMu.Lock()
	defer m.spareMu.Unlock()
	if len(m.spares) == 0 {
		return spare{}, false
	}
	s := m.spares[len(m.spares)-1]
	m.spares = m.spares[:len(m.spares)-1]
	metrics.SetGauge([]string{"nullnet", "client", "overlay", "spare_bridges"}, float32(len(m.spares)))
	return s, true
}

// Spares is the number of parked bridges.
func (m *Manager) Spares() int {
	m.spareMu.Lock()
	defer m.spareMu.Unlock()
	return len(m.spares)
}

// park turns an end's bridge into a spare: down, marked as a spare and out of the end's group
// (one request: a name can only change while the device is down), addresses removed, renamed.
// The caller holds a reserveSpare claim, deletes the bridge's ports and then hands the spare
// to pool: a spare must not be taken while it still has a port, or the next end's bridge
// would join two tunnels (and broadcasts would loop between them). When parking fails the
// bridge is deleted, the claim ends, and nil is returned with what went wrong.
func (m *Manager) park(br netlink.Link) (*spare, error) {
	s := &spare{index: br.Attrs().Index, name: spareName()}
	err := m.setLink(s.index, 0, unix.IFF_UP, func(req *nl.NetlinkRequest) {
		req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(spareAlias)))
		req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(spareGroup)))
	})
	if err == nil {
		err = m.flushAddrs(br)
	}
	if err == nil {
		err = m.setLink(s.index, 0, 0, func(req *nl.NetlinkRequest) {
			req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(s.name)))
		})
	}
	if err != nil {
		m.parkDone(nil)
		err = opErr("park", br.Attrs().Name, err)
		if derr := m.delLink(br); derr != nil {
			return nil, errors.Join(err, derr)
		}
		m.logger.Debug("could not keep a spare bridge; deleted it", "error", err)
		return nil, nil
	}
	return s, nil
}

// pool ends the claims of parked bridges whose ports are gone (portsErr nil): they become
// spares. When removing the ports failed they are deleted instead (the ports, detached,
// are left to the caller).
func (m *Manager) pool(parked []*spare, portsErr error) error {
	var errs []error
	for _, s := range parked {
		if s == nil {
			continue
		}
		if portsErr != nil {
			m.parkDone(nil)
			if l, err := m.h.LinkByIndex(s.index); err == nil && isSpare(l) {
				errs = append(errs, m.delLink(l))
			}
			continue
		}
		s.parked = time.Now()
		m.parkDone(s)
		metrics.IncrCounter([]string{"nullnet", "client", "overlay", "spare_parked"}, 1)
	}
	return errors.Join(errs...)
}

// flushAddrs removes every IPv4 address from l (IPv6 ones go with the link going down).
func (m *Manager) flushAddrs(l netlink.Link) error {
	addrs, err := m.addrList(l)
	if err != nil {
		return err
	}
	for i := range addrs {
		if err := m.h.AddrDel(l, &addrs[i]); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return err
		}
	}
	return nil
}

// unpark renames a spare into end (name, alias, group, MTU) and brings it up, with one request.
// ok is false when no spare could be used; the caller then creates a bridge.
func (m *Manager) unpark(name, alias string, group uint32, mtu int) (netlink.Link, bool) {
	for {
		s, found := m.takeSpare()
		if !found {
			return nil, false
		}
		err := m.setLink(s.index, unix.IFF_UP, unix.IFF_UP, func(req *nl.NetlinkRequest) {
			req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(mtu))))
			req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
			req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
			req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
		})
		if err == nil {
			metrics.IncrCounter([]string{"nullnet", "client", "overlay", "spare_reused"}, 1)
			br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
			br.Index, br.Name, br.MTU, br.Group, br.Alias = s.index, name, mtu, group, alias
			return br, true
		}
		// Gone (deleted by hand) or unusable: forget it, delete what is left, try the next one.
		m.logger.Debug("spare bridge unusable", "spare", s.name, "error", err)
		if l, lerr := m.h.LinkByIndex(s.index); lerr == nil && isSpare(l) {
			_ = m.delLink(l)
		}
	}
}

// setLink sends one RTM_SETLINK for ifindex index: flags under change, plus attributes.
func (m *Manager) setLink(index int, flags, change uint32, attrs func(*nl.NetlinkRequest)) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: m.sh}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	msg.Flags, msg.Change = flags, change
	req.AddData(msg)
	if attrs != nil {
		attrs(req)
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// reapSpares deletes spares idle for longer than idle, oldest first, at most spareReapBatch
// per request; it reports how many it deleted. all deletes every spare regardless of age.
func (m *Manager) reapSpares(idle time.Duration, all bool) (int, error) {
	m.spareMu.Lock()
	var take []spare
	cutoff := time.Now().Add(-idle)
	n := 0
	for n < len(m.spares) && n < spareReapBatch && (all || m.spares[n].parked.Before(cutoff)) {
		n++
	}
	take = append(take, m.spares[:n]...)
	m.spares = append(m.spares[:0], m.spares[n:]...)
	left := len(m.spares)
	m.spareMu.Unlock()
	if len(take) == 0 {
		return 0, nil
	}
	metrics.SetGauge([]string{"nullnet", "client", "overlay", "spare_bridges"}, float32(left))
	g := nextBatchGroup()
	var errs []error
	for _, s := range take {
		l, err := m.h.LinkByIndex(s.index)
		if err != nil || !isSpare(l) {
			continue // gone already, or the index now names someone else's device
		}
		if err := m.h.LinkSetGroup(l, int(g)); err != nil {
			errs = append(errs, m.delLink(l))
		}
	}
	if err := m.deleteGroup(g); err != nil {
		errs = append(errs, opErr("delete", fmt.Sprintf("%d spare bridges", len(take)), err))
	}
	return len(take), errors.Join(errs...)
}

// DeleteSpares deletes every spare now (tests, benchmarks, an operator's drain), in batches.
func (m *Manager) DeleteSpares(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n, err := m.reapSpares(0, true)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
	return total, ctx.Err()
}

// reapLoop deletes idle spares until ctx ends. After a batch it goes on after a short pause
// (setups get RTNL in between) while more spares have expired.
func (m *Manager) reapLoop(ctx context.Context, idle time.Duration) {
	defer m.wg.Done()
	every := max(idle/4, time.Second)
	wait := every
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		n, err := m.reapSpares(idle, false)
		if err != nil {
			m.logger.Warn("deleting idle spare bridges failed", "error", err)
		}
		if n > 0 {
			m.logger.Debug("deleted idle spare bridges", "count", n, "left", m.Spares())
		}
		wait = every
		if n == spareReapBatch {
			wait = 100 * time.Millisecond
		}
	}
}
