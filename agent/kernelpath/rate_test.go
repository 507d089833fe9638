package kernelpath

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/kernelpath/ct"
	"github.com/nullnet/nullnet/agent/kernelpath/nft"
)

// TestKernelPathConnectionRate connects 1,000 times through the DNAT map and 1,000 times
// straight to the server's address (routed by the same proxy namespace, no NAT), and prints both
// rates and the conntrack entries the kernel path leaves behind (TIME_WAIT: see the sizing in
// website/docs/kernel-path.md). Informative: the machine is shared, so it asserts only that
// every connection worked and that every flow is marked.
func TestKernelPathConnectionRate(t *testing.T) {
	tp := threeHosts(t)
	serverTCP := tp.server.Listen(t, "tcp4", net.JoinHostPort(serverAddr.String(), "0"))
	serverPort := uint16(serverTCP.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := serverTCP.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	const listenPort = 7001
	tb, err := nft.New(nft.Config{Name: "nullnet_" + randomID(), NetNS: int(tp.proxy.NS)})
	must(t, err)
	_, err = tb.Start()
	must(t, err)
	t.Cleanup(func() { _ = tb.Stop() })
	must(t, tb.Add(nft.Entry{Key: nft.Key{Client: clientAddr, Proto: nft.TCP, Port: listenPort}, Target: netip.AddrPortFrom(serverAddr, serverPort), Mark: netID}))

	const n = 1000
	rate := func(addr string) float64 {
		t.Helper()
		var took time.Duration
		must(t, tp.client.Do(func() error {
			d := net.Dialer{Timeout: 5 * time.Second}
			start := time.Now()
			for range n {
				c, err := d.DialContext(context.Background(), "tcp4", addr)
				if err != nil {
					return err
				}
				_ = c.Close()
			}
			took = time.Since(start)
			return nil
		}))
		return n / took.Seconds()
	}
	direct := rate(netip.AddrPortFrom(serverAddr, serverPort).String())
	kernel := rate(netip.AddrPortFrom(proxyToClient, listenPort).String())

	cc, err := ct.Open(ct.Config{NetNS: int(tp.proxy.NS)})
	must(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	flows, err := cc.Marked(netID)
	must(t, err)
	t.Logf("%d sequential connections: routed direct %.0f/s, kernel path (DNAT map) %.0f/s (%.2fx); %d marked conntrack entries left",
		n, direct, kernel, kernel/direct, len(flows))
	if len(flows) < n*9/10 {
		t.Fatalf("%d marked conntrack entries after %d connections, want about %d (TIME_WAIT)", len(flows), n, n)
	}
	must(t, cc.Flush(netID))
}
