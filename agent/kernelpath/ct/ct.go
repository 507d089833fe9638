// Package ct reads and deletes the conntrack entries of the kernel fast path through netlink
// (github.com/ti-mo/conntrack). The kernel path marks every flow it translates with the net id
// (see package nft), so a session's kernel flows are the entries with its mark: they are counted
// as the session's uses and flushed when the session is torn down.
package ct

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Flow is the part of a conntrack entry the kernel path needs.
type Flow struct {
	ID     uint32
	Mark   uint32
	Proto  uint8
	Client netip.AddrPort // original source
	Listen netip.AddrPort // original destination: the proxy's address and listen port
	Target netip.AddrPort // where the reply comes from: the replica after DNAT
	// Bytes and packets in both directions; zero unless net.netfilter.nf_conntrack_acct=1.
	BytesOrig, BytesReply     uint64
	PacketsOrig, PacketsReply uint64
}

func flowOf(f *conntrack.Flow) Flow {
	return Flow{
		ID:           f.ID,
		Mark:         f.Mark,
		Proto:        f.TupleOrig.Proto.Protocol,
		Client:       netip.AddrPortFrom(f.TupleOrig.IP.SourceAddress, f.TupleOrig.Proto.SourcePort),
		Listen:       netip.AddrPortFrom(f.TupleOrig.IP.DestinationAddress, f.TupleOrig.Proto.DestinationPort),
		Target:       netip.AddrPortFrom(f.TupleReply.IP.SourceAddress, f.TupleReply.Proto.SourcePort),
		BytesOrig:    f.CountersOrig.Bytes,
		BytesReply:   f.CountersReply.Bytes,
		PacketsOrig:  f.CountersOrig.Packets,
		PacketsReply: f.CountersReply.Packets,
	}
}

// Config configures a Table.
type Config struct {
	// NetNS is an fd of the network namespace to work in; 0 means the caller's.
	NetNS int
}

// Table is a netlink connection to the conntrack table. Requests on one Table are serialised by
// the netlink library; use one Table per goroutine that must not wait for another.
type Table struct {
	conn *conntrack.Conn
}

// Open dials conntrack netlink.
func Open(cfg Config) (*Table, error) {
	c, err := conntrack.Dial(&netlink.Config{NetNS: cfg.NetNS})
	if err != nil {
		return nil, fmt.Errorf("conntrack netlink: %w", err)
	}
	return &Table{conn: c}, nil
}

// Close closes the netlink connection.
func (t *Table) Close() error { return t.conn.Close() }

// Marked lists the IPv4 entries whose mark is exactly mark. The kernel filters (Linux 4.20+).
func (t *Table) Marked(mark uint32) ([]Flow, error) {
	if mark == 0 {
		return nil, errors.New("conntrack: mark 0 would select every unmarked flow")
	}
	flows, err := t.conn.DumpFilter(conntrack.NewFilter().Family(netfilter.ProtoIPv4).Mark(mark), nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack dump of mark %d: %w", mark, err)
	}
	out := make([]Flow, 0, len(flows))
	for i := range flows {
		if flows[i].Mark == mark { // the filter does this; stay safe on kernels that ignore it
			out = append(out, flowOf(&flows[i]))
		}
	}
	return out, nil
}

// Flush deletes the IPv4 entries whose mark is exactly mark, so their next packet is a new flow
// that sees the (changed) nftables map again. The kernel filters (Linux 5.3+).
func (t *Table) Flush(mark uint32) error {
	if mark == 0 {
		return errors.New("conntrack: refusing to flush mark 0 (every unmarked flow on the host)")
	}
	if err := t.conn.FlushFilter(conntrack.NewFilter().Family(netfilter.ProtoIPv4).Mark(mark)); err != nil {
		return fmt.Errorf("conntrack flush of mark %d: %w", mark, err)
	}
	return nil
}

// FlushClient deletes the entries of one client's flows to one listen port with the given mark
// (a session ends, other clients of the same net keep theirs). Entries that vanish meanwhile are
// not errors. It returns how many it deleted.
func (t *Table) FlushClient(mark uint32, proto uint8, client netip.Addr, listenPort uint16) (int, error) {
	if mark == 0 {
		return 0, errors.New("conntrack: mark 0 would select every unmarked flow")
	}
	flows, err := t.conn.DumpFilter(conntrack.NewFilter().Family(netfilter.ProtoIPv4).Mark(mark), nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack dump of mark %d: %w", mark, err)
	}
	n := 0
	for i := range flows {
		f := &flows[i]
		if f.Mark != mark || f.TupleOrig.Proto.Protocol != proto ||
			f.TupleOrig.IP.SourceAddress != client || f.TupleOrig.Proto.DestinationPort != listenPort {
			continue
		}
		if err := t.conn.Delete(*f); err != nil {
			if isNotFound(err) {
				continue
			}
			return n, fmt.Errorf("conntrack delete of %s: %w", flowOf(f).Client, err)
		}
		n++
	}
	return n, nil
}

func isNotFound(err error) bool {
	var oe *netlink.OpError
	if errors.As(err, &oe) {
		return errors.Is(oe.Err, unix.ENOENT)
	}
	return errors.Is(err, unix.ENOENT)
}
