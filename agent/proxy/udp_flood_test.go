package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/config"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// floodSource is the i-th flood address: 127.a.b.1 with one source per /24 (a in 10..209, b in
// 0..249), never in 127.0.0.0/24 where the legitimate client lives. All of 127.0.0.0/8 is
// local, so one socket can send from each of them (IP_PKTINFO) without binding 50,000 sockets.
func floodSource(i int) net.IP {
	return net.IPv4(127, byte(10+i%200), byte(i/200%250), byte(1+i/50000%250))
}

// udpFlooder sends datagrams from many loopback source addresses through one socket, choosing
// the source of each datagram with IP_PKTINFO. It is bound to the wildcard address so that the
// replies sent to its sources are delivered (and discarded) rather than answered with ICMP.
type udpFlooder struct {
	c  *net.UDPConn
	pc *ipv4.PacketConn
}

func newUDPFlooder(t testing.TB) *udpFlooder {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetWriteBuffer(4 << 20)
	_ = c.SetReadBuffer(64 << 10)
	f := &udpFlooder{c: c, pc: ipv4.NewPacketConn(c)}
	go func() { // discard replies so the socket's buffer never matters
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return f
}

// flood sends rounds datagrams from each of sources addresses to dst at about rate datagrams a
// second (paced per millisecond, so that the direct and the proxied runs get the same flood
// whatever the machine's load), and returns how many were sent.
func (f *udpFlooder) flood(ctx context.Context, dst *net.UDPAddr, sources, rounds, rate int) int {
	payload := make([]byte, 64) // a DNS query's size
	sent, total := 0, sources*rounds
	start := time.Now()
	for n := 0; n < total && ctx.Err() == nil; n++ {
		if due := start.Add(time.Duration(n) * time.Second / time.Duration(rate)); time.Until(due) > time.Millisecond {
			time.Sleep(time.Until(due))
		}
		i := n % sources
		binary.BigEndian.PutUint32(payload, uint32(i))
		cm := &ipv4.ControlMessage{Src: floodSource(i)}
		if _, err := f.pc.WriteTo(payload, cm, dst); err == nil {
			sent++
		}
	}
	return sent
}

// probeResult is what the legitimate client saw.
type probeResult struct {
	sent, lost int
	rtts       []time.Duration
}

func (r probeResult) quantile(q float64) time.Duration {
	if len(r.rtts) == 0 {
		return 0
	}
	s := slices.Clone(r.rtts)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// probe is the legitimate client: query after query, each waiting up to 200 ms for its answer
// (matched by sequence number) before the next, until stop is closed. An answer that comes later
// still counts (as a slow one); lost are the queries never answered, 3 s after the last.
func probe(t testing.TB, c *net.UDPConn, stop <-chan struct{}) probeResult {
	var r probeResult
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	sentAt := map[uint32]time.Time{} // unanswered queries
	read := func(until time.Time, want uint32) bool {
		for {
			_ = c.SetReadDeadline(until)
			n, err := c.Read(buf)
			if err != nil {
				return false
			}
			if n < 4 {
				continue
			}
			seq := binary.BigEndian.Uint32(buf)
			if at, ok := sentAt[seq]; ok {
				r.rtts = append(r.rtts, time.Since(at))
				delete(sentAt, seq)
			}
			if seq == want {
				return true
			}
		}
	}
	for seq := uint32(1); ; seq++ {
		select {
		case <-stop:
			read(time.Now().Add(3*time.Second), 0) // late answers
			r.lost = len(sentAt)
			return r
		default:
		}
		binary.BigEndian.PutUint32(msg, seq)
		sentAt[seq] = time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Errorf("probe write: %v", err)
			return r
		}
		r.sent++
		read(time.Now().Add(200*time.Millisecond), seq)
		time.Sleep(time.Millisecond)
	}
}

// floodRun floods dst from sources addresses (rounds datagrams each) while a legitimate
// client, with an established flow to dst, keeps querying; it returns what the client saw
// during the flood.
func floodRun(t testing.TB, dst netip.AddrPort, sources, rounds, rate int) (probeResult, int, time.Duration) {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := exchange(c, []byte("hello"), 10); err != nil { // the established flow
		t.Fatalf("before the flood: %v", err)
	}
	f := newUDPFlooder(t)
	stop := make(chan struct{})
	var res probeResult
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); res = probe(t, c, stop) }()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	sent := f.flood(context.Background(), net.UDPAddrFromAddrPort(dst), sources, rounds, rate)
	took := time.Since(start)
	time.Sleep(200 * time.Millisecond) // queries in flight when the flood ended
	close(stop)
	wg.Wait()
	return res, sent, took
}

// TestUDPFloodEstablishedFlow: 50,000 new source addresses flood a UDP listener while a client
// with an established session keeps querying: the established client loses nothing, the
// listener admits new sessions only at its bounded rate (the rest is dropped and counted), and
// the proxy's session count and heap stay bounded. The same flood sent straight to the
// upstream gives the reference latency; the p99s are logged side by side, not asserted: on a
// shared two-core machine where the flood sender, the proxy and the backend compete for the
// CPU, their ratio moves between runs by more than the 1.5x target (see website/docs/proxy.md).
func TestUDPFloodEstablishedFlow(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	const sources, rounds = 50000, 2
	rate := 50000 // datagrams/s: 100,000 in 2 s
	if raceEnabled {
		rate = 20000 // the race detector slows the relay several times
	}
	res := newTestResolver()
	up := udpUpstream(t, "127.0.0.1:0", udpEcho)
	// A backend sized for floods too, so that what the client loses is the proxy's doing.
	if err := up.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	upAddr := addrOf(t, up.LocalAddr())
	res.set("dns", upAddr)
	port := freePort(t)
	// Warnings only: a debug line per session would measure the test's logger.
	tp := startProxy(t, delayedResolver{res, time.Millisecond}, func(_ *config.Config, c *Config) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: hclog.Warn, Output: testWriter{t}})
	})
	tp.apply(1, Mapping{Protocol: UDP, Port: port, Service: "dns", IdleTimeout: time.Minute})
	tp.waitListening(t, UDP, port)
	l := tp.udpListener(port)
	rc, _ := l.conn.SyscallConn()
	var rcvbuf int
	_ = rc.Control(func(fd uintptr) { rcvbuf, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if want := tp.settings().UDPReceiveBuffer; rcvbuf/2 < want {
		t.Fatalf("listener receive buffer %d bytes, want proxy.udp_receive_buffer = %d (the test runs as root: SO_RCVBUFFORCE)", rcvbuf/2, want)
	}

	direct, dSent, dTook := floodRun(t, upAddr, sources, rounds, rate)
	upDrops := socketDrops(t, upAddr.Port())
	t.Logf("direct:  flood of %d datagrams in %s; client sent %d lost %d p50 %s p99 %s", dSent, dTook,
		direct.sent, direct.lost, direct.quantile(0.5), direct.quantile(0.99))

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	viaProxy, pSent, pTook := floodRun(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), sources, rounds, rate)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	sessions := l.active.Load()
	var drops []string
	for r := range numDropReasons {
		if n := l.drops[r].Load(); n > 0 {
			drops = append(drops, fmt.Sprintf("%s=%d", dropNames[r], n))
		}
	}
	t.Logf("proxy:   flood of %d datagrams in %s; client sent %d lost %d p50 %s p99 %s; sessions %d created %d; drops %v; heap %d→%d MiB",
		pSent, pTook, viaProxy.sent, viaProxy.lost, viaProxy.quantile(0.5), viaProxy.quantile(0.99),
		sessions, l.starts.Load(), drops, before.HeapInuse>>20, after.HeapInuse>>20)
	d99, p99 := direct.quantile(0.99), viaProxy.quantile(0.99)
	if d99 > 0 {
		t.Logf("p99 ratio proxy/direct: %.2f", float64(p99)/float64(d99))
	}

	t.Logf("kernel drops: direct run: upstream %d; proxy run: listener %d, upstream %d", upDrops,
		socketDrops(t, port), socketDrops(t, upAddr.Port())-upDrops)
	if viaProxy.lost > 0 {
		t.Errorf("the established client lost %d of %d queries during the flood", viaProxy.lost, viaProxy.sent)
	}
	if viaProxy.sent < 50 {
		t.Errorf("the established client sent only %d queries during the flood", viaProxy.sent)
	}
	// Admission: at most the burst plus the rate for the flood's duration (and a second of slack).
	set := tp.settings()
	limit := int64(set.UDPNewSessionRate) + int64(float64(set.UDPNewSessionRate)*(pTook.Seconds()+1)) + 1
	if created := int64(l.starts.Load()); created > limit {
		t.Errorf("%d sessions created during the flood, want at most %d (rate %d/s, burst %d)", created, limit,
			set.UDPNewSessionRate, set.UDPNewSessionRate)
	}
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 256<<20 {
		t.Errorf("heap grew by %d MiB during the flood", grew>>20)
	}
}

// delayedResolver adds a fixed delay to every resolution, like a server's Proxy call.
type delayedResolver struct {
	*testResolver
	d time.Duration
}

func (r delayedResolver) Resolve(ctx context.Context, client netip.Addr, service string, p Protocol) (Lease, error) {
	select {
	case <-time.After(r.d):
	case <-ctx.Done():
		return Lease{}, ctx.Err()
	}
	return r.testResolver.Resolve(ctx, client, service, p)
}

// socketDrops is the kernel's drop count (receive buffer full) of the IPv4 UDP sockets bound to
// port, from /proc/net/udp.
func socketDrops(t testing.TB, port uint16) int {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 13 {
			continue
		}
		_, p, _ := strings.Cut(f[1], ":")
		if v, err := strconv.ParseUint(p, 16, 16); err != nil || uint16(v) != port {
			continue
		}
		d, _ := strconv.Atoi(f[12])
		total += d
	}
	return total
}
