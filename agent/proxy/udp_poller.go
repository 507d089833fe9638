package proxy

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// replyPoller waits for replies on every session socket of one UDP listener with a single epoll
// set and one goroutine, instead of a goroutine (and its stack) per session. Replies go back to
// the client through the listening socket, so they leave from the port the client sent to.
//
// The epoll fd is itself registered with Go's network poller (an epoll set is pollable), so the
// loop parks like any socket read instead of holding an OS thread in epoll_wait; closing it
// wakes the loop for shutdown.
type replyPoller struct {
	epfd int
	file *os.File // owns epfd
	rc   syscall.RawConn

	mu   sync.Mutex
	byFD map[int32]*udpSession
	done chan struct{}
}

func newReplyPoller() (*replyPoller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "udp-replies")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	return &replyPoller{epfd: epfd, file: f, rc: rc, byFD: map[int32]*udpSession{}, done: make(chan struct{})}, nil
}

func (rp *replyPoller) add(fd int, s *udpSession) error {
	rp.mu.Lock()
	rp.byFD[int32(fd)] = s
	rp.mu.Unlock()
	if err := syscall.EpollCtl(rp.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
		rp.remove(fd)
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// remove forgets fd; the caller closes it afterwards.
func (rp *replyPoller) remove(fd int) {
	_ = syscall.EpollCtl(rp.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	rp.mu.Lock()
	delete(rp.byFD, int32(fd))
	rp.mu.Unlock()
}

// maxBurst bounds the datagrams taken from one session per wakeup, so that one chatty upstream
// cannot starve the others (epoll is level-triggered: the rest is reported again).
const maxBurst = 64

// replyBatch is how many replies one sendmmsg(2) carries back to clients at most.
const replyBatch = 16

// replyOut is the reply batch of one poller: datagrams read from session sockets, each
// addressed to its session's client, sent through the listening socket together.
type replyOut struct {
	b      *datagramBatch
	owners []*udpSession // the session of each filled slot
	used   int
	lrc    syscall.RawConn // the listening socket
	fam    int             // its address family

	// The state of one sendmmsg attempt, and the callback that makes it, built once (a
	// closure per flush would allocate).
	sent, n int
	errno   syscall.Errno
	sendFn  func(fd uintptr) bool
}

// run moves replies until stop is called.
func (rp *replyPoller) run(l *udpListener) {
	defer close(rp.done)
	out, err := newReplyOut(l)
	if err != nil {
		l.logger.Error("udp reply poller cannot start", "error", err)
		return
	}
	defer out.b.free()
	evs := make([]syscall.EpollEvent, 128)
	var (
		n    int
		werr error
	)
	// Built once: a closure per iteration would allocate on every wakeup.
	poll := func(fd uintptr) bool {
		// Never block here: with nothing ready, return false and let Go's poller park us
		// until the epoll set becomes readable.
		n, werr = syscall.EpollWait(int(fd), evs, 0)
		if werr == syscall.EINTR {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil
	}
	for {
		err := rp.rc.Read(poll)
		if err != nil { // closed by stop
			return
		}
		if werr != nil {
			l.logger.Error("udp reply poller failed", "error", werr)
			return
		}
		for i := range n {
			fd := evs[i].Fd
			rp.mu.Lock()
			s := rp.byFD[fd]
			rp.mu.Unlock()
			if s != nil {
				rp.drain(l, s, int(fd), out)
			}
		}
		out.flush(l)
	}
}

func newReplyOut(l *udpListener) (*replyOut, error) {
	lrc, err := l.conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listening socket: %w", err)
	}
	var fam int
	var ferr error
	if err := lrc.Control(func(fd uintptr) { fam, ferr = socketFamily(fd) }); err != nil {
		return nil, fmt.Errorf("listening socket: %w", err)
	}
	if ferr != nil {
		return nil, ferr
	}
	b, err := newDatagramBatch(replyBatch)
	if err != nil {
		return nil, err
	}
	out := &replyOut{b: b, owners: make([]*udpSession, replyBatch), lrc: lrc, fam: fam}
	out.sendFn = func(fd uintptr) bool {
		out.n, out.errno = out.b.send(fd, out.sent, out.used)
		return out.errno != syscall.EAGAIN
	}
	return out, nil
}

// drain reads up to maxBurst replies of one session into the reply batch, sending the batch
// whenever it fills. A read that returns fewer datagrams than it had room for means the
// socket is empty: no further read is spent to learn it.
func (rp *replyPoller) drain(l *udpListener, s *udpSession, fd int, out *replyOut) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.state != stateReady || s.fd != fd {
		return // ended (and maybe the number was reused) since epoll reported it
	}
	for taken := 0; taken < maxBurst; {
		room := min(out.b.slots()-out.used, maxBurst-taken)
		n, errno := out.b.recv(uintptr(fd), out.used, out.used+room, false)
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.ECONNREFUSED:
			// ICMP port unreachable from the upstream: counted, and not the end of the session.
			s.refused.Add(1)
			continue
		default: // EAGAIN: nothing more for now
			return
		}
		s.touch()
		for i := out.used; i < out.used+n; i++ {
			out.b.setDest(i, int(out.b.msgs[i].n), s.peer, out.fam)
			out.owners[i] = s
		}
		out.used += n
		taken += n
		if out.used == out.b.slots() {
			out.flush(l)
		}
		if n < room {
			return
		}
	}
}

// flush sends the batch's replies to their clients. A datagram the kernel refuses is counted
// as a client-write drop and the rest still go; a full socket buffer waits in Go's poller.
func (out *replyOut) flush(l *udpListener) {
	for out.sent = 0; out.sent < out.used; {
		err := out.lrc.Write(out.sendFn)
		switch {
		case err != nil: // the listener closed
			l.drops[dropClientWrite].Add(uint64(out.used - out.sent))
			out.sent = out.used
		case out.errno == syscall.EINTR:
		case out.errno != 0 || out.n == 0:
			l.drops[dropClientWrite].Add(1)
			out.sent++
		default:
			for i := out.sent; i < out.sent+out.n; i++ {
				out.owners[i].countToClient(int(out.b.iovs[i].Len))
			}
			out.sent += out.n
		}
	}
	clear(out.owners[:out.used])
	out.used = 0
}

// stop ends run and closes the epoll set. Sessions must have been ended before.
func (rp *replyPoller) stop() {
	rp.file.Close()
	<-rp.done
}
