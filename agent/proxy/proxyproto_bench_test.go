package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/proxyproto"
)

// BenchmarkTCPConnRateProxyProtocol measures short connections per second (connect, 64-byte
// request, 128-byte answer, close) through the relay with send_proxy_protocol "v2" and without,
// in alternating half-second rounds (eight each) so that a busy machine affects both alike, and reports the
// ratio of the medians (goal: ≥ 0.97). The back end reads the header when one comes.
//
//	go test ./agent/proxy/ -run XXX -bench TCPConnRateProxyProtocol -benchtime 1x
func BenchmarkTCPConnRateProxyProtocol(b *testing.B) {
	var headers atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [16]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				rest := 64 - 16
				if bytes.Equal(hdr[:12], []byte("\r\n\r\n\x00\r\nQUIT\n")) {
					headers.Add(1)
					rest = 64 + int(binary.BigEndian.Uint16(hdr[14:]))
				}
				if _, err := io.CopyN(io.Discard, c, int64(rest)); err != nil {
					return
				}
				_, _ = c.Write(make([]byte, 128))
			}()
		}
	}()
	res := newTestResolver()
	res.set("rr", addrPortOf(ln.Addr()))
	res.set("rrpp", addrPortOf(ln.Addr()))
	tp := startProxy(b, res, nil)
	plain, pp := freePort(b), freePort(b)
	tp.applyPP(1, ppMapping{Mapping{Protocol: TCP, Port: plain, Service: "rr"}, proxyproto.None},
		ppMapping{Mapping{Protocol: TCP, Port: pp, Service: "rrpp"}, proxyproto.V2})
	tp.waitListening(b, TCP, plain)
	tp.waitListening(b, TCP, pp)

	rate := func(port uint16, d time.Duration) float64 {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var ops atomic.Int64
		var wg sync.WaitGroup
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		start := time.Now()
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, resp := make([]byte, 64), make([]byte, 129)
				for ctx.Err() == nil {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						continue
					}
					_, _ = c.Write(req)
					if n, _ := io.ReadFull(c, resp); n == 128 {
						ops.Add(1)
					}
					c.Close()
				}
			}()
		}
		wg.Wait()
		return float64(ops.Load()) / time.Since(start).Seconds()
	}
	rate(plain, 300*time.Millisecond) // warm up both paths
	rate(pp, 300*time.Millisecond)
	headers.Store(0)
	var rp, rv []float64
	for range max(b.N, 1) {
		for round := range 16 {
			if round%2 == 0 {
				rp = append(rp, rate(plain, 500*time.Millisecond))
			} else {
				rv = append(rv, rate(pp, 500*time.Millisecond))
			}
		}
	}
	median := func(s []float64) float64 { slices.Sort(s); return s[len(s)/2] }
	mp, mv := median(rp), median(rv)
	b.ReportMetric(mp, "plain-conn/s")
	b.ReportMetric(mv, "v2-conn/s")
	b.ReportMetric(mv/mp, "ratio")
	if headers.Load() == 0 {
		b.Fatal("no PROXY header reached the back end")
	}
}
