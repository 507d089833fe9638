package load

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TCPSink reads every connection to its end and counts the bytes. When a connection must start
// with Prefix (a ClientHello a TLS passthrough relay replays), it checks those bytes first and
// counts a connection whose start differs as bad: a relay that garbles the replay fails the
// figure instead of looking fast. A connection closed before sending anything is a health check
// and counts as nothing.
type TCPSink struct {
	ln     net.Listener
	wg     sync.WaitGroup
	prefix []byte
	bytes  atomic.Int64
	bad    atomic.Int64
}

// StartTCPSink listens on addr until Close; prefix may be nil.
func StartTCPSink(addr string, prefix []byte) (*TCPSink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp sink: %w", err)
	}
	s := &TCPSink{ln: ln, prefix: bytes.Clone(prefix)}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the listening address.
func (s *TCPSink) Addr() string { return s.ln.Addr().String() }

// Bytes is how many bytes every connection delivered so far (prefixes included).
func (s *TCPSink) Bytes() int64 { return s.bytes.Load() }

// Bad is how many connections did not start with the prefix.
func (s *TCPSink) Bad() int64 { return s.bad.Load() }

func (s *TCPSink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if len(s.prefix) > 0 {
				head := make([]byte, len(s.prefix))
				_, err := io.ReadFull(c, head)
				if err == io.EOF {
					return // connected and closed: a health check (Consul's TCP check)
				}
				if err != nil || !bytes.Equal(head, s.prefix) {
					s.bad.Add(1)
					return
				}
				s.bytes.Add(int64(len(head)))
			}
			buf := make([]byte, 256<<10)
			for {
				n, err := c.Read(buf)
				s.bytes.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
}

// Close stops accepting.
func (s *TCPSink) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// ClientHello returns the first flight crypto/tls sends to serverName (TLS 1.3, one record):
// the bytes a TLS passthrough relay reads to route, captured without any server.
func ClientHello(serverName string) ([]byte, error) {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		_ = tls.Client(client, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	}()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	head := make([]byte, 5)
	if _, err := io.ReadFull(server, head); err != nil {
		return nil, fmt.Errorf("capturing a ClientHello: %w", err)
	}
	body := make([]byte, int(head[3])<<8|int(head[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		return nil, fmt.Errorf("capturing a ClientHello: %w", err)
	}
	return append(head, body...), nil
}

// Stream opens streams connections to addr, writes prefix on each, then writes as fast as the
// path takes for d. The rate is what sink received in the window after a short warm-up (every
// connection open and past its prefix), in bits per second.
func Stream(ctx context.Context, addr string, prefix []byte, streams int, d time.Duration, sink *TCPSink) (float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bad0 := sink.Bad()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	dialer := net.Dialer{Timeout: 10 * time.Second}
	for range streams {
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			cancel()
			wg.Wait()
			return 0, fmt.Errorf("dial %s: %w", addr, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			if _, err := c.Write(prefix); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 128<<10)
			for ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
			}
		}()
	}
	warm := min(time.Second, d/5)
	time.Sleep(warm)
	b0, t0 := sink.Bytes(), time.Now()
	select {
	case <-time.After(d - warm):
	case <-ctx.Done():
	}
	b1, elapsed := sink.Bytes(), time.Since(t0)
	cancel()
	wg.Wait()
	close(errs)
	// The sink closes a connection whose prefix is wrong: say so rather than "broken pipe".
	if bad := sink.Bad() - bad0; bad > 0 {
		return 0, fmt.Errorf("%d connection(s) through %s did not start with the ClientHello sent", bad, addr)
	}
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("stream to %s: %w", addr, err)
	}
	if b1 <= b0 {
		return 0, errors.New("nothing reached the sink")
	}
	return float64(b1-b0) * 8 / elapsed.Seconds(), nil
}
