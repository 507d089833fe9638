package tlsterm

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of ListenerConfig.
const (
	// DefaultHandshakeTimeout bounds one handshake, from accept to Finished: generous for a
	// slow mobile link (a few round trips), short enough that silent connections do not pile up.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxHandshakes bounds handshakes in progress (each holds a goroutine and a few KiB
	// of buffers until it finishes or times out); past it new connections are closed at once.
	DefaultMaxHandshakes = 4096
)

// Failure is one failed handshake.
type Failure struct {
	Reason Reason
	// ServerName is the SNI name the client sent (for unknown_name), at most 253 bytes.
	ServerName string
	Remote     net.Addr
	Err        error
}

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	TLS              *tls.Config
	HandshakeTimeout time.Duration
	MaxHandshakes    int
	// OnSuccess and OnFailure are called once per handshake, from its goroutine; they must be
	// cheap and safe for concurrent use.
	OnSuccess func(*tls.Conn)
	OnFailure func(Failure)
}

// Listener accepts TCP connections from an inner listener, completes their TLS handshakes
// concurrently and hands out only the connections whose handshake succeeded, as *tls.Conn (which
// net/http recognises: it then serves h2 when ALPN chose it). It owns its accept goroutine and
// one goroutine per handshake in progress; Close ends them all.
type Listener struct {
	inner net.Listener
	cfg   ListenerConfig
	ready chan *tls.Conn
	done  chan struct{}
	errc  chan error // a permanent accept error, delivered to Accept once

	mu      sync.Mutex
	pending map[net.Conn]struct{} // raw connections in their handshake
	closed  bool
	wg      sync.WaitGroup
	once    sync.Once
}

// NewListener starts accepting on inner.
func NewListener(inner net.Listener, cfg ListenerConfig) *Listener {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.OnSuccess == nil {
		cfg.OnSuccess = func(*tls.Conn) {}
	}
	if cfg.OnFailure == nil {
		cfg.OnFailure = func(Failure) {}
	}
	l := &Listener{inner: inner, cfg: cfg, ready: make(chan *tls.Conn), done: make(chan struct{}),
		errc: make(chan error, 1), pending: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection whose handshake succeeded.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, cuts handshakes in progress and waits for the goroutines.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				// Out of descriptors or memory for a moment: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-l.done:
					return
				}
				continue
			}
			l.errc <- err
			return
		}
		delay = 0
		if !l.track(c) {
			c.Close()
			if !l.isClosed() {
				l.cfg.OnFailure(Failure{Reason: ReasonOverload, Remote: c.RemoteAddr(), Err: errOverload})
				continue
			}
			return
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

var errOverload = errors.New("too many TLS handshakes in progress")

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// track registers a raw connection in its handshake; false when the listener is closed or full.
func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || len(l.pending) >= l.cfg.MaxHandshakes {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *Listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

func (l *Listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	ctx, n := withNote(context.Background())
	_ = raw.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	tc := tls.Server(raw, l.cfg.TLS)
	err := tc.HandshakeContext(ctx)
	l.untrack(raw)
	if err != nil {
		f := Failure{Reason: classify(err, n), Remote: raw.RemoteAddr(), Err: err}
		if f.Reason == ReasonUnknownName {
			f.ServerName = truncate(n.serverName, 253)
		}
		var re tls.RecordHeaderError
		if f.Reason == ReasonNotTLS && errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
			// As net/http does: tell a person with a browser what went wrong.
			_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		tc.Close()
		if !l.isClosed() {
			l.cfg.OnFailure(f)
		}
		return
	}
	_ = raw.SetDeadline(time.Time{})
	l.cfg.OnSuccess(tc)
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// classify maps a handshake error to its Reason.
func classify(err error, n *note) Reason {
	if n != nil && n.reason != "" {
		return n.reason
	}
	var re tls.RecordHeaderError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &re):
		return ReasonNotTLS
	case errors.As(err, &oe) && oe.Op == "remote error":
		// An alert from the client: it rejected the certificate, or the protocol.
		return ReasonProtocol
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return ReasonClosed
	case strings.HasPrefix(err.Error(), "tls: "):
		return ReasonProtocol
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return ReasonProtocol
	}
	return ReasonOther
}

// looksLikeHTTP reports whether a TLS record header is the start of an HTTP request.
func looksLikeHTTP(hdr []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "OPTIO", "DELET", "PATCH", "CONNE"} {
		if bytes.HasPrefix(hdr, []byte(m)) {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
