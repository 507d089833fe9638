package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one load run measured.
type Result struct {
	Ops      int64         // completed connections or round trips
	Errors   int64         // failed connections, or lost datagrams
	Elapsed  time.Duration // measuring window
	P50, P99 time.Duration // latency of one connection or round trip
}

// Rate is completed operations per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// latencies collects samples from many goroutines; each keeps its own slice and merges once.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) merge(s []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, s...)
	l.mu.Unlock()
}

func (l *latencies) quantiles() (p50, p99 time.Duration) {
	slices.Sort(l.all)
	return Quantile(l.all, 0.50), Quantile(l.all, 0.99)
}

// Quantile returns the q-quantile of sorted samples (nearest rank), 0 for none.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// ConnRate opens short connections to addr from `workers` goroutines for d: connect, send one
// request, read the whole response until the server closes, close. A connection that fails or
// returns a short answer counts as an error.
func ConnRate(ctx context.Context, addr string, workers int, d time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ops, errs atomic.Int64
	var lat latencies
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := make([]byte, RequestSize)
			resp := make([]byte, ResponseSize+1)
			samples := make([]time.Duration, 0, 4096)
			dialer := net.Dialer{Timeout: 5 * time.Second}
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := oneConn(&dialer, addr, req, resp); err != nil {
					errs.Add(1)
					continue
				}
				samples = append(samples, time.Since(t0))
				ops.Add(1)
			}
			lat.merge(samples)
		}()
	}
	wg.Wait()
	r := Result{Ops: ops.Load(), Errors: errs.Load(), Elapsed: time.Since(start)}
	r.P50, r.P99 = lat.quantiles()
	return r
}

// Probe makes one short connection to addr and checks the whole answer came back.
func Probe(addr string) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	return oneConn(&d, addr, make([]byte, RequestSize), make([]byte, ResponseSize+1))
}

func oneConn(d *net.Dialer, addr string, req, resp []byte) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	n, err := io.ReadFull(c, resp)
	if n != ResponseSize || !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("short or long response: %d bytes (%v)", n, err)
	}
	return nil
}

// UDPRoundTrips runs `clients` sockets against addr for d, each keeping `window` datagrams of
// `size` bytes in flight: every reply sends the next datagram. A datagram not answered within
// 200 ms counts as lost and is replaced, so loss never stalls a client. The send time travels in
// the payload, so round-trip times need no bookkeeping.
func UDPRoundTrips(ctx context.Context, addr string, clients, window, size int, d time.Duration) (Result, error) {
	if size < 16 {
		return Result{}, fmt.Errorf("datagram size %d below 16 bytes", size)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return Result{}, err
	}
	conns := make([]*net.UDPConn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.DialUDP("udp", nil, ua)
		if err != nil {
			return Result{}, fmt.Errorf("udp client: %w", err)
		}
		_ = c.SetReadBuffer(1 << 20)
		conns = append(conns, c)
	}
	var ops, lost atomic.Int64
	var lat latencies
	var measuring atomic.Bool
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]byte, size)
			in := make([]byte, 65536)
			samples := make([]time.Duration, 0, 1<<14)
			send := func() {
				binary.LittleEndian.PutUint64(out, uint64(time.Now().UnixNano()))
				_, _ = c.Write(out)
			}
			for range window {
				send()
			}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := c.Read(in)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						lost.Add(int64(window))
						for range window {
							send()
						}
					}
					continue // ICMP refused while the relay starts; keep going
				}
				if n >= 8 && measuring.Load() {
					sent := int64(binary.LittleEndian.Uint64(in))
					samples = append(samples, time.Duration(time.Now().UnixNano()-sent))
					ops.Add(1)
				}
				send()
			}
			lat.merge(samples)
		}()
	}
	// The first 10% warms the path (sessions resolved, caches hot) and is not counted.
	warm := d / 10
	select {
	case <-time.After(warm):
	case <-ctx.Done():
	}
	measuring.Store(true)
	start := time.Now()
	wg.Wait()
	r := Result{Ops: ops.Load(), Errors: lost.Load(), Elapsed: time.Since(start)}
	r.P50, r.P99 = lat.quantiles()
	return r, nil
}

// IdleSessions opens n UDP sessions through addr, an echo route, each from its own source
// address in 127.2.0.0/15 (loopback accepts any 127/8 source, so no two sessions share a client
// address). A session counts once its datagram came back, so the relay certainly holds it;
// then its socket closes (no file descriptor is held here). It returns how many sessions the
// relay confirmed: memory divided by that count is never flattered by datagrams it dropped.
func IdleSessions(ctx context.Context, addr string, n int) (int, error) {
	dst, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0, fmt.Errorf("idle sessions: %w", err)
	}
	const workers = 32
	base := binary.BigEndian.Uint32(netip.MustParseAddr("127.2.0.1").AsSlice())
	var next, held atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload, buf := make([]byte, 32), make([]byte, 64)
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				var a [4]byte
				binary.BigEndian.PutUint32(a[:], base+uint32(i))
				src := netip.AddrPortFrom(netip.AddrFrom4(a), 0)
				c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("idle session %d from %s: %w", i, src, err)
					}
					mu.Unlock()
					return
				}
				for range 3 { // the first datagram may wait for the relay to resolve the session
					if _, err := c.Write(payload); err != nil {
						break
					}
					_ = c.SetReadDeadline(time.Now().Add(time.Second))
					if _, err := c.Read(buf); err == nil {
						held.Add(1)
						break
					}
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	if h := held.Load(); h == 0 && firstErr == nil {
		firstErr = errors.New("idle sessions: no datagram came back")
	}
	return int(held.Load()), firstErr
}
