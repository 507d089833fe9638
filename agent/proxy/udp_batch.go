package proxy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Datagram batches: the UDP relay moves datagrams with recvmmsg(2) and sendmmsg(2), so one
// system call carries every datagram that is waiting rather than one each, and a batch that
// comes back short says the socket is drained without a last read failing with EAGAIN.

// mmsghdr is struct mmsghdr: a msghdr and the length the kernel moved.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// datagramBatch is a set of slots, each a maxDatagram buffer, an iovec and a socket address.
// The buffers are one anonymous mapping, so a slot costs memory only as far as datagrams have
// actually reached into it (small datagrams touch one page of their 64 KiB).
type datagramBatch struct {
	mem   []byte
	msgs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
}

// slotStride is the distance between two slots' buffers: a datagram's room plus a page and 24
// cache lines, so that the same offset in consecutive slots falls in different cache sets. With
// a stride of exactly 64 KiB every slot's first bytes would compete for the same few sets of
// the CPU caches.
const slotStride = maxDatagram + 4096 + 24*64

func newDatagramBatch(slots int) (*datagramBatch, error) {
	mem, err := unix.Mmap(-1, 0, slots*slotStride, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap datagram buffers: %w", err)
	}
	b := &datagramBatch{mem: mem, msgs: make([]mmsghdr, slots), iovs: make([]unix.Iovec, slots),
		names: make([]unix.RawSockaddrInet6, slots)}
	for i := range slots {
		b.iovs[i].Base = &mem[i*slotStride]
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b, nil
}

// free unmaps the buffers; the batch must not be used afterwards.
func (b *datagramBatch) free() {
	if b.mem != nil {
		_ = unix.Munmap(b.mem)
		b.mem = nil
	}
}

func (b *datagramBatch) slots() int { return len(b.msgs) }

// data is slot i's datagram after a receive (valid until the slot is reused).
func (b *datagramBatch) data(i int) []byte {
	return b.mem[i*slotStride : i*slotStride+int(b.msgs[i].n)]
}

// recv receives up to to-from datagrams into slots [from, to) without blocking; withAddr asks
// for each sender's address (addr). It returns how many arrived.
func (b *datagramBatch) recv(fd uintptr, from, to int, withAddr bool) (int, syscall.Errno) {
	for i := from; i < to; i++ {
		b.iovs[i].SetLen(maxDatagram)
		h := &b.msgs[i].hdr
		if withAddr {
			h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			h.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		} else {
			h.Name, h.Namelen = nil, 0
		}
		h.Flags = 0
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[from])), uintptr(to-from),
		unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// addr is the sender of slot i after a recv with withAddr (IPv4-mapped addresses unmapped).
func (b *datagramBatch) addr(i int) netip.AddrPort {
	sa := &b.names[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), port)
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			// A link-local client: replies must leave through its interface.
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, port)
	}
	return netip.AddrPort{}
}

// setDest makes slot i a datagram of length n to dst, for a socket of family fam.
func (b *datagramBatch) setDest(i, n int, dst netip.AddrPort, fam int) {
	b.iovs[i].SetLen(n)
	sa := &b.names[i]
	*sa = unix.RawSockaddrInet6{}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], dst.Port())
	h := &b.msgs[i].hdr
	h.Name = (*byte)(unsafe.Pointer(sa))
	a := dst.Addr().Unmap()
	switch {
	case fam == unix.AF_INET && a.Is4():
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		in.Family = unix.AF_INET
		in.Addr = a.As4()
		h.Namelen = unix.SizeofSockaddrInet4
	case fam == unix.AF_INET6 && a.IsValid():
		sa.Family = unix.AF_INET6
		sa.Addr = a.As16() // IPv4 clients as ::ffff:a.b.c.d on a dual-stack socket
		if z := a.Zone(); z != "" {
			id, _ := strconv.ParseUint(z, 10, 32) // zones come from addr: numeric
			sa.Scope_id = uint32(id)
		}
		h.Namelen = unix.SizeofSockaddrInet6
	default:
		// No such destination on this socket (an IPv6 client cannot reach an IPv4 socket):
		// the send fails with EDESTADDRREQ and is counted as a client-write drop.
		h.Name, h.Namelen = nil, 0
	}
	h.Flags = 0
}

// setConnected makes slot i a datagram of length n for a connected socket (no address: on a
// connected UDP socket an address would override the connection's peer).
func (b *datagramBatch) setConnected(i, n int) {
	b.iovs[i].SetLen(n)
	h := &b.msgs[i].hdr
	h.Name, h.Namelen, h.Flags = nil, 0, 0
}

// send sends slots [from, to) without blocking and returns how many left. A datagram the
// kernel refuses stops the call at that slot (n < to-from, errno 0 when some were sent).
func (b *datagramBatch) send(fd uintptr, from, to int) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[from])), uintptr(to-from),
		unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// socketFamily is the address family of a socket (a listener bound to 0.0.0.0 may be a
// dual-stack IPv6 socket, which needs IPv4 destinations mapped).
func socketFamily(fd uintptr) (int, error) {
	sa, err := unix.Getsockname(int(fd))
	if err != nil {
		return 0, fmt.Errorf("getsockname: %w", err)
	}
	if _, ok := sa.(*unix.SockaddrInet4); ok {
		return unix.AF_INET, nil
	}
	return unix.AF_INET6, nil
}
