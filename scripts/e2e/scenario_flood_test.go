package e2e

import (
	"errors"
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

	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/ipv4"
)

// Scenario 11 (issue 17, item 5): a UDP flood from 50,000 source addresses at the proxied DNS
// port, through the real binary and the real topology. The flood leaves the outside namespace
// from addresses of floodNet, which is local there (`ip route add local … dev lo`), so one
// socket sends from each address with IP_PKTINFO; edge and node1 route the replies back to
// outside. Meanwhile a legitimate client in outside, from its own address, sends real DNS
// queries to dnsmasq through the proxy at a fixed pace and measures loss and latency. The same
// flood is sent once straight at dnsmasq on node1 for the reference latency.
//
// Asserted: the established client loses no query during the proxied flood, the edge agent's
// RSS grows by less than floodRSSLimit, and a new client is served right after. The p99s and
// their ratio are logged, not asserted: on this shared two-core machine the flood sender, the
// proxy, dnsmasq and the other engineers' builds compete for the CPU, and the ratio moves between
// runs by more than the 1.5x target (the bench figure, TestUDPFloodEstablishedFlow, states the
// same for the in-process measure).

const (
	floodSources = 50000
	floodRounds  = 2
	floodRate    = 50000 // datagrams a second: 100,000 in 2 s
	// floodNet is the flood's sources: 198.18.0.0/15 is reserved for benchmarks (RFC 2544), so
	// it clashes with no address of the suite. Its routes live in the run's own namespaces,
	// which no other run sees, so runs side by side need no distinct range.
	floodNet = "198.18.0.0/16"
	// floodRSSLimit bounds the edge agent's RSS growth during the proxied flood.
	floodRSSLimit = 64 << 20
	// probeEvery is the legitimate client's pace: open loop, so a stall shows in the latency
	// of every query sent during it rather than in fewer samples.
	probeEvery = 2 * time.Millisecond
)

// floodSource is the i-th flood address: 198.18.a.b with 250 networks (a) of 200 hosts (b).
func floodSource(i int) net.IP {
	return net.IPv4(198, 18, byte(i%250), byte(1+i/250%200))
}

// inNamespace runs f on a thread switched into namespace ns; a socket f creates belongs to ns
// for good. The thread is never handed back to the scheduler (the goroutine exits locked).
func inNamespace[T any](ns string, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			ch <- result{err: fmt.Errorf("namespace %s: %w", ns, err)}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- result{err: fmt.Errorf("entering %s: %w", ns, err)}
			return
		}
		v, err := f()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// dnsQuery is a query for dnsName (type A) with the given id.
func dnsQuery(id uint16) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(dnsName + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	msg, _ := b.Finish()
	return msg
}

// dnsAnswerID parses a reply and returns its id if it answers dnsName with dnsAnswer.
func dnsAnswerID(b []byte) (uint16, error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return 0, err
	}
	if err := p.SkipAllQuestions(); err != nil {
		return h.ID, err
	}
	a, err := p.AnswerHeader()
	if err != nil {
		return h.ID, fmt.Errorf("reply %d: no answer (rcode %v): %w", h.ID, h.RCode, err)
	}
	if a.Type != dnsmessage.TypeA {
		return h.ID, fmt.Errorf("reply %d: answer of type %v", h.ID, a.Type)
	}
	r, err := p.AResource()
	if err != nil {
		return h.ID, err
	}
	if got := netip.AddrFrom4(r.A).String(); got != dnsAnswer {
		return h.ID, fmt.Errorf("reply %d: answer %s, want %s", h.ID, got, dnsAnswer)
	}
	return h.ID, nil
}

// probeResult is what the legitimate client saw.
type probeResult struct {
	sent, lost, bad int
	rtts            []time.Duration
}

func (r probeResult) quantile(q float64) time.Duration {
	if len(r.rtts) == 0 {
		return 0
	}
	s := slices.Clone(r.rtts)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (r probeResult) String() string {
	return fmt.Sprintf("client sent %d, lost %d, bad %d, p50 %s, p99 %s, max %s", r.sent, r.lost, r.bad,
		r.quantile(0.5).Round(10*time.Microsecond), r.quantile(0.99).Round(10*time.Microsecond),
		r.quantile(1).Round(10*time.Microsecond))
}

// dnsProbe is the legitimate client on its connected socket: a query every probeEvery until
// stop is closed, each answer matched by id; a query unanswered 3 s after the last is lost.
func dnsProbe(c *net.UDPConn, stop <-chan struct{}) probeResult {
	var (
		mu     sync.Mutex
		r      probeResult
		sentAt = map[uint16]time.Time{}
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return // the deadline set after the last query
			}
			at := time.Now()
			id, err := dnsAnswerID(buf[:n])
			mu.Lock()
			if t0, ok := sentAt[id]; ok {
				delete(sentAt, id)
				if err != nil {
					r.bad++
				} else {
					r.rtts = append(r.rtts, at.Sub(t0))
				}
			}
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for id := uint16(1); ; id++ {
		select {
		case <-stop:
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			<-readDone
			_ = c.SetReadDeadline(time.Time{})
			mu.Lock()
			defer mu.Unlock()
			r.lost = len(sentAt)
			return r
		case <-tick.C:
		}
		q := dnsQuery(id)
		mu.Lock()
		sentAt[id] = time.Now()
		r.sent++
		mu.Unlock()
		if _, err := c.Write(q); err != nil {
			mu.Lock()
			delete(sentAt, id)
			r.bad++
			mu.Unlock()
		}
	}
}

// flooder sends from many source addresses of floodNet through one socket made in outside,
// bound to the wildcard address so that replies to those addresses are delivered (and
// discarded) rather than answered with ICMP.
type flooder struct {
	c  *net.UDPConn
	pc *ipv4.PacketConn
}

func newFlooder() (*flooder, error) {
	c, err := inNamespace(hostOut.ns, func() (*net.UDPConn, error) {
		return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	})
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteBuffer(4 << 20)
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil && errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	return &flooder{c: c, pc: ipv4.NewPacketConn(c)}, nil
}

// flood sends floodRounds queries from each of floodSources addresses to dst, paced at
// floodRate, and returns how many were sent and how long it took.
func (f *flooder) flood(dst *net.UDPAddr) (int, time.Duration) {
	q := dnsQuery(0)
	sent, total := 0, floodSources*floodRounds
	start := time.Now()
	for n := 0; n < total; n++ {
		if due := start.Add(time.Duration(n) * time.Second / floodRate); time.Until(due) > time.Millisecond {
			time.Sleep(time.Until(due))
		}
		i := n % floodSources
		q[0], q[1] = byte(i>>8), byte(i)
		if _, err := f.pc.WriteTo(q, &ipv4.ControlMessage{Src: floodSource(i)}, dst); err == nil {
			sent++
		}
	}
	return sent, time.Since(start)
}

// floodRun opens the legitimate client's flow to dst from outside, floods dst while the client
// queries, and returns what the client saw. during, if not nil, runs while the flood does.
func floodRun(t *testing.T, label string, f *flooder, dst *net.UDPAddr, during func(stop <-chan struct{})) probeResult {
	t.Helper()
	c, err := inNamespace(hostOut.ns, func() (*net.UDPConn, error) { return net.DialUDP("udp4", nil, dst) })
	if err != nil {
		t.Fatalf("client socket: %v", err)
	}
	defer c.Close()
	// The established flow: answered before the flood starts (through the proxy the first
	// query builds the session and its tunnel).
	if err := poll(settle, func() error {
		if _, err := c.Write(dnsQuery(0)); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		defer c.SetReadDeadline(time.Time{})
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		_, err = dnsAnswerID(buf[:n])
		return err
	}); err != nil {
		t.Fatalf("the client's flow to %s before the flood: %v", dst, err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var res probeResult
	wg.Add(1)
	go func() { defer wg.Done(); res = dnsProbe(c, stop) }()
	duringStop := make(chan struct{})
	if during != nil {
		wg.Add(1)
		go func() { defer wg.Done(); during(duringStop) }()
	}
	time.Sleep(100 * time.Millisecond)
	sent, took := f.flood(dst)
	time.Sleep(200 * time.Millisecond) // queries in flight when the flood ended
	close(stop)
	close(duringStop)
	wg.Wait()
	t.Logf("%s: flood of %d datagrams to %s in %s; %s", label, sent, dst, took.Round(time.Millisecond), res)
	return res
}

// vmRSS is a process's resident set in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, errors.New("no VmRSS")
}

// floodRoutes makes floodNet local in outside and routes it back there from edge and node1;
// the returned function removes the routes again (the namespaces' deletion would too).
func floodRoutes() (func(), error) {
	var undo [][]string
	steps := [][]string{
		{"-n", hostOut.ns, "route", "replace", "local", floodNet, "dev", "lo"},
		{"-n", hostEdge.ns, "route", "replace", floodNet, "via", hostOut.ip},
		{"-n", hostN1.ns, "route", "replace", floodNet, "via", hostOut.ip},
	}
	cleanup := func() {
		for _, u := range undo {
			_, _ = run(nil, "ip", u...)
		}
	}
	for _, s := range steps {
		if _, err := run(nil, "ip", s...); err != nil {
			cleanup()
			return nil, err
		}
		u := slices.Clone(s)
		u[3] = "del"
		undo = append(undo, u)
	}
	return cleanup, nil
}

func testUDPFlood(t *testing.T, c *cluster) {
	undo, err := floodRoutes()
	if err != nil {
		t.Fatalf("flood routes: %v", err)
	}
	defer undo()
	f, err := newFlooder()
	if err != nil {
		t.Fatal(err)
	}
	defer f.c.Close()

	direct := floodRun(t, "direct to dnsmasq", f, &net.UDPAddr{IP: net.ParseIP(hostN1.ip), Port: dnsPort}, nil)

	c.mu.Lock()
	edge := c.agents[hostEdge.name]
	c.mu.Unlock()
	if edge == nil {
		t.Fatal("no agent runs on edge")
	}
	pid := edge.cmd.Process.Pid
	before, err := vmRSS(pid)
	if err != nil {
		t.Fatalf("edge agent's RSS: %v", err)
	}
	peak := before
	sample := func(stop <-chan struct{}) {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if v, err := vmRSS(pid); err == nil && v > peak {
					peak = v
				}
			}
		}
	}
	proxied := floodRun(t, "through the proxy", f, &net.UDPAddr{IP: net.ParseIP(hostEdge.ip), Port: dnsListen}, sample)
	after, _ := vmRSS(pid)
	t.Logf("edge agent RSS: %d MiB before, %d MiB peak, %d MiB after", before>>20, peak>>20, after>>20)
	if d99 := direct.quantile(0.99); d99 > 0 {
		t.Logf("p99 proxied/direct: %s / %s = %.2f (target 1.5, not asserted: see the comment above)",
			proxied.quantile(0.99).Round(10*time.Microsecond), d99.Round(10*time.Microsecond),
			float64(proxied.quantile(0.99))/float64(d99))
	}
	var ls struct {
		Listeners []struct {
			Protocol string `json:"protocol"`
			Port     int    `json:"port"`
			Active   int    `json:"active"`
		} `json:"listeners"`
	}
	if err := getJSON(apiURL(hostEdge, "/v1/proxy/listeners"), &ls); err == nil {
		for _, l := range ls.Listeners {
			if l.Protocol == "udp" && l.Port == dnsListen {
				t.Logf("UDP sessions on edge's DNS listener right after the flood: %d", l.Active)
			}
		}
	}

	if proxied.lost > 0 || proxied.bad > 0 {
		t.Errorf("the established client lost %d and got %d bad answers of %d queries during the proxied flood",
			proxied.lost, proxied.bad, proxied.sent)
	}
	if proxied.sent < 500 {
		t.Errorf("the established client sent only %d queries during the flood", proxied.sent)
	}
	if grew := peak - before; grew > floodRSSLimit {
		t.Errorf("the edge agent's RSS grew by %d MiB during the flood, want < %d MiB", grew>>20, floodRSSLimit>>20)
	}
	// A new client (a new source port: a new session, through admission) is served at once.
	start := time.Now()
	if err := poll(10*time.Second, func() error {
		out, err := outside("dig", "@"+hostEdge.ip, "-p", fmt.Sprint(dnsListen), dnsName, "A", "+short",
			"+tries=1", "+time=2", "-b", hostOut.ip+"#23053")
		if out = strings.TrimSpace(out); err == nil && out != dnsAnswer {
			err = fmt.Errorf("dig answered %q, want %s", out, dnsAnswer)
		}
		return err
	}); err != nil {
		t.Errorf("a new client after the flood: %v", err)
	} else {
		t.Logf("a new client was served %v after the flood", time.Since(start).Round(time.Millisecond))
	}
	// Nothing leaks: the flood's admitted sessions idle out and their tunnels go.
	if err := poll(teardown+30*time.Second, noTunnels); err != nil {
		t.Errorf("after the flood: %v", err)
	}
}
