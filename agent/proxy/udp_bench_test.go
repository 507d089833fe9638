package proxy

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/nullnet/nullnet/config"
	"golang.org/x/net/ipv4"
)

// BenchmarkUDPIdleSessionMemory opens a fixed number of sessions (from
// distinct 127.x.y.z source addresses, all sent through one socket with IP_PKTINFO) and reports
// the heap and stack the proxy holds per idle session. Not part of `make test`:
//
//	go test -run '^$' -bench UDPIdleSessionMemory -benchtime 1x ./agent/proxy/
func BenchmarkUDPIdleSessionMemory(b *testing.B) {
	const sessions = 8000 // below the usual 20000 fd limit (one upstream socket per session)
	res := newTestResolver()
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	res.set("echo", addrPortOf(echo.LocalAddr()))
	// No admission limits: the benchmark opens its sessions as fast as it can.
	tp := startProxy(b, res, func(a *config.Config, _ *Config) {
		a.Proxy.UDPNewSessionRate, a.Proxy.UDPNewSessionRatePerPrefix = 0, 0
	})
	port := freePort(b)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "echo", IdleTimeout: time.Hour})
	tp.waitListening(b, UDP, port)

	client, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	pc := ipv4.NewPacketConn(client)
	go func() { // drain replies
		buf := make([]byte, 2048)
		for {
			if _, _, err := client.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range sessions {
		src := net.IPv4(127, 1, byte(i>>8), byte(i))
		cm := &ipv4.ControlMessage{Src: src}
		if _, err := pc.WriteTo([]byte("x"), cm, dst); err != nil {
			b.Fatalf("send from %s: %v", src, err)
		}
		if i%500 == 499 {
			time.Sleep(20 * time.Millisecond) // let the reader keep up; loopback drops otherwise
		}
	}
	// Loopback drops some datagrams under this burst; measure whatever sessions exist once
	// their number has been stable for a second.
	last, stable := int64(-1), 0
	for stable < 10 {
		time.Sleep(100 * time.Millisecond)
		l, _ := tp.listener(UDP, port)
		if l.Active == last {
			stable++
		} else {
			last, stable = l.Active, 0
		}
	}
	if last < sessions/2 {
		b.Fatalf("only %d of %d sessions", last, sessions)
	}
	time.Sleep(500 * time.Millisecond)
	b.StopTimer()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	l, _ := tp.listener(UDP, port)
	heap := float64(int64(after.HeapInuse) - int64(before.HeapInuse))
	stack := float64(int64(after.StackInuse) - int64(before.StackInuse))
	b.ReportMetric(float64(l.Active), "sessions")
	b.ReportMetric(heap/float64(l.Active), "heap-B/session")
	b.ReportMetric(stack/float64(l.Active), "stack-B/session")
	b.ReportMetric((heap+stack)/float64(l.Active)*100000/(1<<20), "MiB/100k-sessions")
}

// BenchmarkUDPRelay measures one client's request/response round trips through the relay.
func BenchmarkUDPRelay(b *testing.B) {
	res := newTestResolver()
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.(*net.UDPConn).ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = echo.(*net.UDPConn).WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	res.set("echo", addrPortOf(echo.LocalAddr()))
	tp := startProxy(b, res, nil)
	port := freePort(b)
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "echo"})
	tp.waitListening(b, UDP, port)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 512)
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, _ = c.Write(msg)
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			i-- // lost datagram: retry
			continue
		}
	}
}
