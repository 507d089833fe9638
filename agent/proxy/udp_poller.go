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

// run moves replies until stop is called.
func (rp *replyPoller) run(l *udpListener) {
	defer close(rp.done)
	evs := make([]syscall.EpollEvent, 128)
	buf := make([]byte, maxDatagram)
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
				rp.drain(l, s, int(fd), buf)
			}
		}
	}
}

// drain reads up to maxBurst replies of one session and sends them to its client.
func (rp *replyPoller) drain(l *udpListener, s *udpSession, fd int, buf []byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.state != stateReady || s.fd != fd {
		return // ended (and maybe the number was reused) since epoll reported it
	}
	for range maxBurst {
		n, err := syscall.Read(fd, buf)
		switch err {
		case nil:
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
		if _, err := l.conn.WriteToUDPAddrPort(buf[:n], s.client); err != nil {
			l.drops[dropClientWrite].Add(1)
			continue
		}
		s.countToClient(n)
	}
}

// stop ends run and closes the epoll set. Sessions must have been ended before.
func (rp *replyPoller) stop() {
	rp.file.Close()
	<-rp.done
}
