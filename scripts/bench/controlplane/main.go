// Command controlplane measures the Proxy RPC end to end with real kernel devices: a server
// (in process) against a real Consul agent, and two node agents' control channels (in process)
// building their tunnel ends with overlay.Manager inside two network namespaces joined by a
// veth underlay.
//
// It prints (text and one JSON line, see scripts/bench/internal/ctrlplane):
//   - cold Proxy-call latency p50/p99: a new client each call, so each call builds the tunnel
//     on both ends and waits for both acks;
//   - a churn run: 2,048 distinct clients, 64 in flight, 1 s idle timeout; each client takes a
//     use and releases it at once; successes, total time, call p99, and the time from the last
//     release until no tunnel device remains on either host.
//
// Needs root (namespaces). Environment: NULLNET_CONSUL_BIN (else the consultest cache),
// NULLNET_BENCH_SMOKE=1 for a short run.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/client"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type figure struct {
	Name   string  `json:"name"`
	Title  string  `json:"title"`
	Unit   string  `json:"unit"`
	Value  float64 `json:"value"`
	Higher bool    `json:"higher_is_better"`
	Limit  float64 `json:"limit"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane bench:", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates network namespaces and VXLAN devices")
	}
	smoke := os.Getenv("NULLNET_BENCH_SMOKE") == "1"
	coldN, churnN, inFlight := 200, 2048, 64
	if smoke {
		coldN, churnN = 30, 256
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	hosts, removeNS, err := buildHosts()
	var once sync.Once
	cleanupNS := func() { once.Do(removeNS) }
	defer cleanupNS()
	if err != nil {
		return err
	}
	// SIGINT/SIGTERM (Ctrl-C, `timeout`, the bench runner giving up) must not leave the
	// namespaces behind: delete them and exit at once.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			fmt.Fprintln(os.Stderr, "controlplane bench: interrupted; removing its network namespaces")
			cleanupNS()
			os.Exit(130)
		}
	}()

	bin := os.Getenv("NULLNET_CONSUL_BIN")
	if bin == "" {
		if bin, err = consultest.FindBinary(); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp("", "nnss-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cs, err := consultest.Launch(bin, consultest.Options{}, tmp)
	if err != nil {
		return fmt.Errorf("starting consul: %w", err)
	}
	defer cs.Stop()
	cc, err := api.NewClient(cs.Config())
	if err != nil {
		return err
	}

	stacks := filepath.Join(tmp, "stacks")
	_ = os.MkdirAll(stacks, 0o755)
	if err := os.WriteFile(filepath.Join(stacks, "bench.hcl"), []byte(`stack "bench" {
  service "web" {
    protocol    = "tcp"
    listen_port = 18080
    timeout     = "1s"
  }
}
`), 0o644); err != nil {
		return err
	}
	cfg := config.Default()
	cfg.NodeName = "bench-server"
	cfg.Server.Enabled, cfg.Server.StacksDir, cfg.Server.Network = true, stacks, config.NetworkVXLAN
	logger := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn, Output: os.Stderr})
	srv, err := server.New(server.Config{Agent: cfg, Consul: cc, Events: events.New(100000, hclog.NewNullLogger()),
		Logger: logger, LockKey: "nullnet/bench-leader"})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	srv.RegisterGRPC(g)
	go func() { _ = g.Serve(lis) }()
	// Shutdown is bounded: with thousands of tunnel ends still queued for removal, a graceful
	// stop could take minutes, and the namespaces (deleted last) must go in any case.
	defer boundedWait(10*time.Second, g.Stop)
	srvDone := make(chan struct{})
	sctx, scancel := context.WithCancel(ctx)
	go func() { defer close(srvDone); _ = srv.Run(sctx) }()
	defer boundedWait(20*time.Second, func() { scancel(); <-srvDone })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()

	nctx, ncancel := context.WithCancel(ctx)
	defer ncancel()
	for _, h := range hosts {
		if err := startNode(nctx, conn, h); err != nil {
			return err
		}
	}
	if err := cc.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 8080,
		Address: hosts[0].underlay.String(), Meta: map[string]string{server.MetaNode: hosts[0].name}}); err != nil {
		return err
	}
	ingress := pb.NewIngressClient(conn)
	call := func(client string) (*pb.ProxyResponse, time.Duration, error) {
		cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
		defer ccancel()
		start := time.Now()
		r, err := ingress.Proxy(cctx, &pb.ProxyRequest{ClientIp: client, Service: "web", ProxyNode: hosts[1].name})
		return r, time.Since(start), err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, _, err := call("198.18.255.254")
		if err == nil {
			_, _ = ingress.ReleaseProxy(ctx, &pb.ReleaseProxyRequest{LeaseId: r.LeaseId, ProxyNode: hosts[1].name})
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server never became ready: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Cold calls, one at a time, each for a new client.
	var cold []time.Duration
	var leases []string
	for i := range coldN {
		r, d, err := call(fmt.Sprintf("198.18.0.%d", i+1))
		if err != nil {
			return fmt.Errorf("cold call %d: %w", i, err)
		}
		if r.Reused {
			return fmt.Errorf("cold call %d reused a session", i)
		}
		cold = append(cold, d)
		leases = append(leases, r.LeaseId)
	}
	for _, l := range leases {
		_, _ = ingress.ReleaseProxy(ctx, &pb.ReleaseProxyRequest{LeaseId: l, ProxyNode: hosts[1].name})
	}
	if err := waitNoDevices(hosts, 120*time.Second); err != nil {
		return fmt.Errorf("after the cold calls: %w", err)
	}

	// Churn.
	var ok atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(churnN) {
					return
				}
				r, d, err := call(fmt.Sprintf("198.19.%d.%d", i/250, i%250+1))
				mu.Lock()
				lat = append(lat, d)
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				if err != nil {
					continue
				}
				ok.Add(1)
				_, _ = ingress.ReleaseProxy(ctx, &pb.ReleaseProxyRequest{LeaseId: r.LeaseId, ProxyNode: hosts[1].name})
			}
		}()
	}
	wg.Wait()
	churnTotal := time.Since(start)
	lastRelease := time.Now()
	cleanupErr := waitNoDevices(hosts, 300*time.Second)
	cleanup := time.Since(lastRelease)
	// Torn-down ends leave their bridges as spares (agent/overlay/spare.go) for later setups;
	// the agent deletes them after a minute unused. Report how many and what deleting them all
	// costs, so "no device left" is not bought by hiding devices.
	spareCount, spareStart := 0, time.Now()
	for _, h := range hosts {
		n, err := h.mgr.DeleteSpares(ctx)
		if err != nil && cleanupErr == nil {
			cleanupErr = fmt.Errorf("deleting spare bridges: %w", err)
		}
		spareCount += n
	}
	spareDelete := time.Since(spareStart)

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	figs := []figure{
		{Name: "cold_p50", Title: "cold Proxy call (tunnel on both ends) p50", Unit: "ms", Value: ms(pct(cold, 50)), Limit: 20},
		{Name: "cold_p99", Title: "cold Proxy call (tunnel on both ends) p99", Unit: "ms", Value: ms(pct(cold, 99))},
		{Name: "churn_success", Title: fmt.Sprintf("churn: %d clients, %d in flight, success", churnN, inFlight), Unit: "%",
			Value: 100 * float64(ok.Load()) / float64(churnN), Higher: true, Limit: 100},
		{Name: "churn_total", Title: "churn: total time", Unit: "s", Value: churnTotal.Seconds(), Limit: 30},
		{Name: "churn_call_p99", Title: "churn: Proxy call p99", Unit: "ms", Value: ms(pct(lat, 99))},
		{Name: "churn_cleanup", Title: "churn: last release until no tunnel device remains (1 s idle timeout included)",
			Unit: "s", Value: cleanup.Seconds(), Limit: 5},
		{Name: "churn_spares", Title: "churn: spare bridges kept for reuse when the last end was gone", Unit: "bridges",
			Value: float64(spareCount)},
		{Name: "churn_spare_delete", Title: "churn: deleting every spare bridge afterwards (the agent does it after 60 s idle)",
			Unit: "s", Value: spareDelete.Seconds()},
	}
	for _, f := range figs {
		fmt.Printf("%s: %.2f %s\n", f.Name, f.Value, f.Unit)
	}
	b, _ := json.Marshal(map[string]any{"figures": figs})
	fmt.Println(string(b))
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, "first churn error:", firstErr)
	}
	return cleanupErr
}

// boundedWait runs f and returns when it did or after d, whichever is first.
func boundedWait(d time.Duration, f func()) {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		fmt.Fprintf(os.Stderr, "controlplane bench: shutdown step still running after %s; moving on\n", d)
	}
}

// benchSpares is NULLNET_BENCH_SPARES (spare bridges per node), default the agent's.
func benchSpares() int {
	if n, err := strconv.Atoi(os.Getenv("NULLNET_BENCH_SPARES")); err == nil && n >= 0 {
		return n
	}
	return overlay.DefaultSpareBridges
}

// benchLogLevel is NULLNET_BENCH_LOG_LEVEL (e.g. debug, to see batch timings), default warn.
func benchLogLevel() hclog.Level {
	if l := hclog.LevelFromString(os.Getenv("NULLNET_BENCH_LOG_LEVEL")); l != hclog.NoLevel {
		return l
	}
	return hclog.Warn
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

type host struct {
	name     string
	ns       netns.NsHandle
	nsName   string
	underlay netip.Addr
	mgr      *overlay.Manager
}

// buildHosts creates two namespaces joined by a veth pair (the underlay). The returned cleanup
// deletes them (which deletes every device inside) and is safe to call after a partial build.
func buildHosts() ([]*host, func(), error) {
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	var hosts []*host
	cleanup := func() {
		for _, h := range hosts {
			if h.mgr != nil {
				h.mgr.Close()
			}
			_ = h.ns.Close()
			_ = netns.DeleteNamed(h.nsName)
		}
	}
	for i, role := range []string{"svc", "prx"} {
		h := &host{name: "bench-" + role, nsName: fmt.Sprintf("nnss-%s-%s", id, role),
			underlay: netip.AddrFrom4([4]byte{192, 168, 214, byte(i + 1)})}
		ns, err := newNamedNS(h.nsName)
		if err != nil {
			return hosts, cleanup, err
		}
		h.ns = ns
		hosts = append(hosts, h)
	}
	h0, err := netlink.NewHandleAt(hosts[0].ns)
	if err != nil {
		return hosts, cleanup, err
	}
	defer h0.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "eth0", PeerNamespace: netlink.NsFd(int(hosts[1].ns))}
	veth.Name = "eth0"
	if err := h0.LinkAdd(veth); err != nil {
		return hosts, cleanup, fmt.Errorf("underlay veth: %w", err)
	}
	for _, h := range hosts {
		nh, err := netlink.NewHandleAt(h.ns)
		if err != nil {
			return hosts, cleanup, err
		}
		for _, name := range []string{"eth0", "lo"} {
			l, err := nh.LinkByName(name)
			if err == nil && name == "eth0" {
				err = nh.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: h.underlay.AsSlice(), Mask: net.CIDRMask(24, 32)}})
			}
			if err == nil {
				err = nh.LinkSetUp(l)
			}
			if err != nil {
				nh.Close()
				return hosts, cleanup, fmt.Errorf("%s: %s: %w", h.nsName, name, err)
			}
		}
		nh.Close()
		if h.mgr, err = overlay.New(overlay.Config{NetNS: h.ns, SpareBridges: benchSpares(),
			Logger: hclog.New(&hclog.LoggerOptions{Name: h.name + ".overlay", Level: benchLogLevel(), Output: os.Stderr})}); err != nil {
			return hosts, cleanup, err
		}
	}
	return hosts, cleanup, nil
}

func newNamedNS(name string) (netns.NsHandle, error) {
	type res struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.NewNamed(name)
		ch <- res{h, err}
	}()
	r := <-ch
	return r.h, r.err
}

// startNode runs a real client role (agent/client) for h, with its overlay.Manager inside h's
// namespace: the control channel and command executor are the product's own.
func startNode(ctx context.Context, conn *grpc.ClientConn, h *host) error {
	cfg := config.Default()
	cfg.NodeName, cfg.AdvertiseAddr, cfg.Client.Enabled = h.name, h.underlay.String(), true
	logger := hclog.New(&hclog.LoggerOptions{Name: h.name, Level: hclog.Warn, Output: os.Stderr})
	c, err := client.New(client.Config{Agent: cfg, Conn: conn, Overlay: h.mgr, Logger: logger,
		Events: events.NewReporter(h.name, nil, nil, hclog.NewNullLogger())})
	if err != nil {
		return err
	}
	go func() { _ = c.Run(ctx) }()
	return nil
}

// waitNoDevices waits until neither host has a device named like a tunnel end (bridge, VXLAN
// or veth of any net id, marked or not).
func waitNoDevices(hosts []*host, limit time.Duration) error {
	handles := make([]*netlink.Handle, len(hosts))
	for i, h := range hosts {
		nh, err := netlink.NewHandleAt(h.ns)
		if err != nil {
			return err
		}
		defer nh.Close()
		handles[i] = nh
	}
	deadline := time.Now().Add(limit)
	for {
		left := 0
		for _, nh := range handles {
			links, err := nh.LinkList()
			if err != nil {
				// A dump interrupted by concurrent changes is normal while teardowns run:
				// count it as "not empty yet" and look again.
				left++
				continue
			}
			for _, l := range links {
				if _, _, ok := overlay.ParseName(l.Attrs().Name); ok {
					left++
				}
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d tunnel devices remain after %s", left, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
