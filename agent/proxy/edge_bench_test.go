package proxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/nullnet/nullnet/proto"
)

// allowList1000 is 999 CIDRs the client is not in (every other /24: none merge), then the client's range: the lookup's
// worst place for a linear scan, no different for the matcher's binary search.
func allowList1000(client string) []string {
	out := make([]string, 0, 1000)
	for i := range 999 {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 7), byte(i << 1), 0}), 24).String())
	}
	return append(out, client)
}

// BenchmarkTCPConnRateAllowList measures short connections per second through the proxy (connect,
// one request, the answer, close; 16 clients) to a service without a policy and to one with an
// allow-list of 1,000 CIDRs, alternating, and reports both rates and their ratio (target ≥ 0.97):
//
//	go test -run '^$' -bench TCPConnRateAllowList -benchtime 1x ./agent/proxy/
func BenchmarkTCPConnRateAllowList(b *testing.B) {
	res := newTestResolver()
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte("pong"))
				c.Close()
			}()
		}
	}()
	res.set("plain", addrPortOf(up.Addr()))
	res.set("listed", addrPortOf(up.Addr()))
	tp := startProxy(b, res, nil)
	plainPort, listedPort := freePort(b), freePort(b)
	tp.applyBundle(bundle(1, tcpMapping("plain", plainPort, nil),
		tcpMapping("listed", listedPort, &pb.ServicePolicy{Allow: allowList1000("127.0.0.0/8")})))
	tp.waitListening(b, TCP, plainPort)
	tp.waitListening(b, TCP, listedPort)

	rate := func(port uint16, d time.Duration) float64 {
		var ops, errs atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 16)
				for time.Now().Before(stop) {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						errs.Add(1)
						continue
					}
					_, _ = c.Write([]byte("ping"))
					n, _ := io.ReadFull(c, buf[:4])
					c.Close()
					if n == 4 {
						ops.Add(1)
					} else {
						errs.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if e := errs.Load(); e > ops.Load()/100 {
			b.Fatalf("port %d: %d errors for %d connections", port, e, ops.Load())
		}
		return float64(ops.Load()) / d.Seconds()
	}
	rate(plainPort, 500*time.Millisecond) // warm up both paths
	rate(listedPort, 500*time.Millisecond)
	var plain, listed float64
	for range b.N {
		for range 3 { // alternate, so that neither always runs on a warmer or busier machine
			plain += rate(plainPort, 2*time.Second)
			listed += rate(listedPort, 2*time.Second)
		}
	}
	b.ReportMetric(plain/float64(3*b.N), "conn/s-plain")
	b.ReportMetric(listed/float64(3*b.N), "conn/s-allow1000")
	b.ReportMetric(listed/plain, "ratio")
}
