// Package load holds the bench's own backends and load generators, for the figures iperf3 does
// not measure: short TCP connections per second, UDP round trips per second with their latency,
// and idle UDP sessions held open. Backends and generators run in the bench process; the relay
// under test runs in another process, so its CPU and memory are measured alone.
package load

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
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
	// acceptProxy: a connection may start with a PROXY protocol v2 header (read and counted).
	acceptProxy bool
	// ProxyHeaders counts the connections that started with a v2 header.
	ProxyHeaders atomic.Int64
}

// StartProxyProtocolResponder is a TCPResponder that reads the PROXY protocol v2 header a
// connection may start with before the request, as a back end behind send_proxy_protocol does.
func StartProxyProtocolResponder(addr string) (*TCPResponder, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp responder: %w", err)
	}
	s := &TCPResponder{ln: ln, acceptProxy: true}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// sigV2 starts a PROXY protocol v2 header; 16 bytes with the version, family and length.
var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// readRequest reads one request, after the PROXY header if one comes first.
func (s *TCPResponder) readRequest(c net.Conn, req []byte) error {
	if !s.acceptProxy {
		_, err := io.ReadFull(c, req)
		return err
	}
	var hdr [16]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if !bytes.Equal(hdr[:12], sigV2) {
		copy(req, hdr[:])
		_, err := io.ReadFull(c, req[len(hdr):])
		return err
	}
	s.ProxyHeaders.Add(1)
	if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint16(hdr[14:]))); err != nil {
		return err
	}
	_, err := io.ReadFull(c, req)
	return err
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
			if err := s.readRequest(c, req); err != nil {
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
