// Package load holds the bench's own backends and load generators, for the figures iperf3 does
// not measure: short TCP connections per second, UDP round trips per second with their latency,
// and idle UDP sessions held open. Backends and generators run in the bench process; the relay
// under test runs in another process, so its CPU and memory are measured alone.
package load

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// RequestSize and ResponseSize are the payloads of one short TCP connection: a request the
// size of a small RPC and an answer of the same order.
const (
	RequestSize  = 64
	ResponseSize = 128
)

// TCPResponder answers every connection: it reads one request, writes one response and closes
// (the server closes first, so TIME_WAIT stays on the server side and the client never runs out
// of ephemeral ports).
type TCPResponder struct {
	ln net.Listener
	wg sync.WaitGroup
}

// StartTCPResponder listens on addr until Close.
func StartTCPResponder(addr string) (*TCPResponder, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp responder: %w", err)
	}
	s := &TCPResponder{ln: ln}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the listening address.
func (s *TCPResponder) Addr() string { return s.ln.Addr().String() }

func (s *TCPResponder) serve() {
	defer s.wg.Done()
	resp := make([]byte, ResponseSize)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		go func() {
			defer c.Close()
			req := make([]byte, RequestSize)
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			_, _ = c.Write(resp)
		}()
	}
}

// Close stops accepting.
func (s *TCPResponder) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// UDPEcho sends every datagram back to its sender; with Sink set it only reads.
type UDPEcho struct {
	conn *net.UDPConn
	wg   sync.WaitGroup
}

// StartUDPEcho listens on addr with `readers` goroutines reading the one socket (the kernel
// spreads datagrams across them).
func StartUDPEcho(addr string, readers int, sink bool) (*UDPEcho, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udp echo: %w", err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("udp echo: %w", err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	s := &UDPEcho{conn: conn}
	for range readers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 65536)
			for {
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue // ICMP errors surface here; keep serving
				}
				if !sink {
					_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
				}
			}
		}()
	}
	return s, nil
}

// Addr is the listening address.
func (s *UDPEcho) Addr() string { return s.conn.LocalAddr().String() }

// Close stops the readers.
func (s *UDPEcho) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}
