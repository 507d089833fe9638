package proxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// firstChunk buffers the first read of each direction (see copyConn).
var firstChunk = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// copyConn copies src to dst until EOF (nil error) like io.Copy, but moves the first chunk
// with read and write: most connections through a proxy are short (one request, one reply),
// and for a few hundred bytes splice's pipe round trip costs more syscalls than it saves.
// Everything after the first chunk goes through io.Copy, which splices.
func copyConn(dst, src *net.TCPConn) (int64, error) {
	bp := firstChunk.Get().(*[]byte)
	n, rerr := src.Read(*bp)
	var werr error
	if n > 0 {
		_, werr = dst.Write((*bp)[:n])
	}
	firstChunk.Put(bp)
	switch {
	case werr != nil:
		return 0, werr
	case rerr == io.EOF:
		return int64(n), nil
	case rerr != nil:
		return int64(n), rerr
	}
	rest, err := io.Copy(dst, src)
	return int64(n) + rest, err
}

// halfResult is the outcome of one copy direction.
type halfResult struct {
	n      int64
	err    error
	toUp   bool
	closed bool // the copy ended because the other direction tore the connection down
}

// relay copies both ways until both directions end. Both conns stay *net.TCPConn so io.Copy
// takes the splice(2) path on Linux; the byte counts are io.Copy's.
//
// A clean EOF in one direction is propagated with CloseWrite (half-close) and the other
// direction keeps going; an error (reset, broken pipe) aborts both sides with a reset so that
// neither end waits on a dead peer.
func relay(workers *workerPool, client, upstream *net.TCPConn) (toUp, toClient int64, reason string) {
	var aborted atomic.Bool
	var firstEOF atomic.Int32 // 0 none, 1 client, 2 upstream
	pipe := func(dst, src *net.TCPConn, toUp bool) halfResult {
		n, err := copyConn(dst, src)
		if err == nil {
			who := int32(2)
			if toUp {
				who = 1
			}
			// EOF from src: pass the FIN on (ENOTCONN, the peer already gone, is fine to
			// ignore). When the other direction has ended already, both sockets are closed
			// right after this, and close sends the FIN itself: one shutdown(2) fewer.
			if firstEOF.CompareAndSwap(0, who) {
				_ = dst.CloseWrite()
			}
			return halfResult{n: n, toUp: toUp}
		}
		if aborted.Swap(true) {
			return halfResult{n: n, err: err, toUp: toUp, closed: true}
		}
		_ = src.SetLinger(0)
		_ = dst.SetLinger(0)
		src.Close()
		dst.Close()
		return halfResult{n: n, err: err, toUp: toUp}
	}
	done := make(chan halfResult, 1)
	workers.run(func() { done <- pipe(upstream, client, true) })
	r1 := pipe(client, upstream, false)
	r2 := <-done
	client.Close()
	upstream.Close()

	first := r2
	for _, r := range []halfResult{r1, r2} {
		if r.toUp {
			toUp = r.n
		} else {
			toClient = r.n
		}
	}
	// The first direction to end explains the close; an error always wins over an EOF.
	switch {
	case r1.err != nil && !r1.closed:
		first = r1
	case r2.err != nil && !r2.closed:
		first = r2
	}
	switch {
	case first.err != nil && first.toUp:
		reason = "client→upstream copy failed: " + first.err.Error()
	case first.err != nil:
		reason = "upstream→client copy failed: " + first.err.Error()
	case firstEOF.Load() == 1:
		reason = "client closed first"
	default:
		reason = "upstream closed first"
	}
	return toUp, toClient, reason
}
