// Command stackscale measures the control plane with a large stack set: 10,000 tcp services in
// one stacks directory, through the real path (validation, leader mirror into a real Consul in
// transactions, the definitions watch, the port table, a WatchPortMappings subscriber), and the
// number of connections the server holds to Consul while doing it (counted by wrapping the
// dialer of Consul's own pooled transport: real TCP connections, as Consul's
// http_max_conns_per_client counts them).
//
// It prints (text and one JSON line, see scripts/bench/internal/ctrlplane):
//
//   - start → the subscriber holds the complete table of N services (target < 10 s);
//
//   - the file deleted → the subscriber holds an empty table;
//
//   - the server restarted with the definitions in Consul → the complete table again;
//
//   - the peak of concurrent connections to Consul over all of it (target <= 8);
//
//   - the number of tables the subscriber received that were neither empty nor complete (must
//     be 0: a table is published only when complete).
//
//     go run ./scripts/bench/stackscale [-services 10000]
//
// Environment: NULLNET_CONSUL_BIN (else the consultest cache); NULLNET_BENCH_SMOKE=1 runs 1,000.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
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
	n := flag.Int("services", 10000, "stack services")
	flag.Parse()
	if os.Getenv("NULLNET_BENCH_SMOKE") == "1" {
		*n = 1000
	}
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "stackscale:", err)
		os.Exit(1)
	}
}

// connCounter counts the TCP connections open at once through a wrapped dialer.
type connCounter struct {
	mu         sync.Mutex
	open, peak int
	dial       func(ctx context.Context, network, addr string) (net.Conn, error)
}

type countedConn struct {
	net.Conn
	once sync.Once
	c    *connCounter
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.c.mu.Lock(); c.c.open--; c.c.mu.Unlock() })
	return c.Conn.Close()
}

func (c *connCounter) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := c.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.open++
	c.peak = max(c.peak, c.open)
	c.mu.Unlock()
	return &countedConn{Conn: conn, c: c}, nil
}

func (c *connCounter) peakConns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak
}

func run(n int) error {
	bin, err := consultest.FindBinary()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "nullnet-bench-stackscale")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var opts consultest.Options
	consulProfile := os.Getenv("NULLNET_BENCH_CONSUL_CPUPROFILE")
	if consulProfile != "" {
		opts.ExtraHCL = "enable_debug = true\n"
	}
	c, err := consultest.Launch(bin, opts, tmp)
	if err != nil {
		return err
	}
	defer c.Stop()
	dir := filepath.Join(tmp, "stacks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "scale.hcl"), []byte(stack(n)), 0o644); err != nil {
		return err
	}
	counter := &connCounter{}
	partial := 0
	if f := os.Getenv("NULLNET_BENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	// Start → complete table.
	if consulProfile != "" {
		go fetchProfile(c.HTTPAddr, consulProfile)
	}
	consulCPU0, selfCPU0 := cpuOf(c.PID()), selfCPU()
	started := time.Now()
	s1, err := startServer(c, dir, counter)
	if err != nil {
		return err
	}
	sub1, err := s1.subscribe()
	if err != nil {
		s1.stop()
		return err
	}
	if err := sub1.waitSize(n, 2*time.Minute); err != nil {
		s1.stop()
		return fmt.Errorf("first table: %w", err)
	}
	publish := time.Since(started)
	consulCPU, serverCPU := cpuOf(c.PID())-consulCPU0, selfCPU()-selfCPU0

	// File deleted → empty table.
	if err := os.Remove(filepath.Join(dir, "scale.hcl")); err != nil {
		s1.stop()
		return err
	}
	removedAt := time.Now()
	if err := sub1.waitSize(0, 2*time.Minute); err != nil {
		s1.stop()
		return fmt.Errorf("after removal: %w", err)
	}
	remove := time.Since(removedAt)
	if err := os.WriteFile(filepath.Join(dir, "scale.hcl"), []byte(stack(n)), 0o644); err != nil {
		s1.stop()
		return err
	}
	if err := sub1.waitSize(n, 2*time.Minute); err != nil {
		s1.stop()
		return fmt.Errorf("after the file came back: %w", err)
	}
	partial += sub1.partial(n)
	s1.stop()

	// Restart with the definitions in Consul → complete table.
	restartedAt := time.Now()
	s2, err := startServer(c, dir, counter)
	if err != nil {
		return err
	}
	defer s2.stop()
	sub2, err := s2.subscribe()
	if err != nil {
		return err
	}
	if err := sub2.waitSize(n, 2*time.Minute); err != nil {
		return fmt.Errorf("after restart: %w", err)
	}
	restart := time.Since(restartedAt)
	partial += sub2.partial(n)
	peak := counter.peakConns()

	fmt.Printf("%d stack services, real Consul %s:\n", n, consultest.Version)
	fmt.Printf("  start -> complete table at the subscriber: %s (target < 10s)\n", publish.Round(time.Millisecond))
	fmt.Printf("  CPU during it: Consul %s, server (and subscriber) %s\n", consulCPU.Round(time.Millisecond), serverCPU.Round(time.Millisecond))
	fmt.Printf("  file deleted -> empty table: %s\n", remove.Round(time.Millisecond))
	fmt.Printf("  server restarted -> complete table: %s\n", restart.Round(time.Millisecond))
	fmt.Printf("  peak concurrent connections to Consul: %d (target <= 8)\n", peak)
	fmt.Printf("  partial tables published: %d (must be 0)\n", partial)
	label := fmt.Sprintf("%d services", n)
	figs := []figure{
		{Name: "publish_s", Title: label + ": start → complete table at a proxy", Unit: "s", Value: publish.Seconds(), Limit: 10},
		{Name: "publish_consul_cpu_s", Title: label + ": Consul CPU from start to complete table", Unit: "s", Value: consulCPU.Seconds()},
		{Name: "publish_server_cpu_s", Title: label + ": server CPU from start to complete table", Unit: "s", Value: serverCPU.Seconds()},
		{Name: "remove_s", Title: label + ": file deleted → empty table", Unit: "s", Value: remove.Seconds(), Limit: 10},
		{Name: "restart_s", Title: label + ": server restart → complete table", Unit: "s", Value: restart.Seconds(), Limit: 10},
		{Name: "consul_conns_peak", Title: label + ": peak connections to Consul", Unit: "conns", Value: float64(peak), Limit: 8},
		{Name: "partial_tables", Title: label + ": partial tables published", Unit: "tables", Value: float64(partial), Limit: 0.5},
	}
	line, _ := json.Marshal(map[string]any{"figures": figs})
	fmt.Println(string(line))
	if publish > 10*time.Second || peak > 8 || partial > 0 {
		return fmt.Errorf("a target was missed")
	}
	return nil
}

func stack(n int) string {
	var b strings.Builder
	b.WriteString("stack \"scale\" {\n")
	for i := range n {
		fmt.Fprintf(&b, "  service \"svc-%05d.scale\" {\n    protocol    = \"tcp\"\n    listen_port = %d\n    timeout     = \"30s\"\n  }\n", i, 20000+i%45000)
	}
	b.WriteString("}\n")
	return b.String()
}

type runningServer struct {
	conn *grpc.ClientConn
	stop func()
}

func startServer(c *consultest.Server, dir string, counter *connCounter) (*runningServer, error) {
	ccfg := c.Config()
	tr := api.DefaultConfig().Transport // the production transport, as consul.NewClient uses it
	counter.dial = tr.DialContext
	tr.DialContext = counter.dialContext
	ccfg.Transport = tr
	client, err := api.NewClient(ccfg)
	if err != nil {
		return nil, err
	}
	cfg := config.Default()
	cfg.Server.Enabled, cfg.Server.StacksDir = true, dir
	logger := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.LevelFromString(os.Getenv("NULLNET_BENCH_LOG"))})
	if os.Getenv("NULLNET_BENCH_LOG") == "" {
		logger.SetLevel(hclog.Warn)
	}
	srv, err := server.New(server.Config{Agent: cfg, Consul: client, Events: events.New(1000, logger), Logger: logger})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer()
	srv.RegisterGRPC(g)
	go func() { _ = g.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		<-done
		return nil, err
	}
	return &runningServer{conn: conn, stop: func() {
		conn.Close()
		g.Stop()
		cancel()
		<-done
		tr.CloseIdleConnections()
	}}, nil
}

type subscriber struct {
	mu    sync.Mutex
	sizes []int
	err   error
	ch    chan struct{}
}

func (s *runningServer) subscribe() (*subscriber, error) {
	stream, err := pb.NewIngressClient(s.conn).WatchPortMappings(context.Background(),
		&pb.WatchPortMappingsRequest{ProxyNode: "bench"}, grpc.MaxCallRecvMsgSize(64<<20))
	if err != nil {
		return nil, err
	}
	sub := &subscriber{ch: make(chan struct{}, 1)}
	go func() {
		for {
			b, err := stream.Recv()
			sub.mu.Lock()
			if err != nil {
				sub.err = err
			} else {
				sub.sizes = append(sub.sizes, len(b.GetMappings()))
			}
			sub.mu.Unlock()
			select {
			case sub.ch <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return sub, nil
}

func (s *subscriber) waitSize(n int, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		ok := len(s.sizes) > 0 && s.sizes[len(s.sizes)-1] == n
		err, sizes := s.err, fmt.Sprint(s.sizes)
		s.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-s.ch:
		case <-deadline:
			return fmt.Errorf("no table of %d mappings within %s (received sizes %s)", n, timeout, sizes)
		}
	}
}

// partial counts tables that were neither empty nor complete.
func (s *subscriber) partial(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := 0
	for _, sz := range s.sizes {
		if sz != 0 && sz != n {
			k++
		}
	}
	return k
}

// cpuOf is a process's user+system CPU time (from /proc; 0 when unreadable).
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fetchProfile saves a 5 s CPU profile of Consul (NULLNET_BENCH_CONSUL_CPUPROFILE).
func fetchProfile(addr, file string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=5")
	if err != nil {
		fmt.Fprintln(os.Stderr, "consul profile:", err)
		return
	}
	defer resp.Body.Close()
	out, err := os.Create(file)
	if err != nil {
		return
	}
	defer out.Close()
	_, _ = io.Copy(out, resp.Body)
}
