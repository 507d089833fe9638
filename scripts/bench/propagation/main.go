// Command propagation measures the stack propagation delay: from a stack file written to disk
// until a WatchPortMappings subscriber holds the table that reflects it, through the real path
// (fsnotify, debounce, validation, leader mirror into a real Consul, the catalog blocking query,
// the port table, gRPC). It prints p50, p99 and max over N edits.
//
//	go run ./scripts/bench/propagation [-edits 100] [-debounce 100ms]
//
// It needs the Consul binary (see agent/consul/consultest: NULLNET_CONSUL_BIN or the cache).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
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

const stackTmpl = `stack "bench" {
  service "redis.bench" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = 60
  }
  service "web.bench" {
    timeout = "5m"
  }
}
`

func main() {
	edits := flag.Int("edits", 100, "number of edits to measure")
	debounce := flag.Duration("debounce", config.DefaultReloadDebounce, "server.reload_debounce")
	target := flag.Duration("target", 500*time.Millisecond, "p99 target; exit 1 when exceeded")
	flag.Parse()
	if err := run(*edits, *debounce, *target); err != nil {
		fmt.Fprintln(os.Stderr, "propagation:", err)
		os.Exit(1)
	}
}

func run(edits int, debounce, target time.Duration) error {
	bin, err := consultest.FindBinary()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "nullnet-bench-propagation")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	c, err := consultest.Launch(bin, consultest.Options{}, tmp)
	if err != nil {
		return err
	}
	defer c.Stop()
	return measure(c, tmp, edits, debounce, target)
}

func measure(c *consultest.Server, tmp string, edits int, debounce, target time.Duration) error {
	consulClient, err := api.NewClient(c.Config())
	if err != nil {
		return err
	}
	dir := filepath.Join(tmp, "stacks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	port := 20000
	if err := writeStack(dir, port); err != nil {
		return err
	}
	cfg := config.Default()
	cfg.Server.Enabled, cfg.Server.StacksDir, cfg.Server.ReloadDebounce = true, dir, debounce
	logger := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn})
	srv, err := server.New(server.Config{Agent: cfg, Consul: consulClient, Events: events.New(1000, logger), Logger: logger})
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
	defer g.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := pb.NewIngressClient(conn).WatchPortMappings(ctx, &pb.WatchPortMappingsRequest{ProxyNode: "bench"})
	if err != nil {
		return err
	}
	// arrivals delivers the receive time of every table holding redis.bench at a given port.
	type arrival struct {
		port uint32
		at   time.Time
	}
	arrivals := make(chan arrival, 1024)
	go func() {
		for {
			b, err := stream.Recv()
			if err != nil {
				close(arrivals)
				return
			}
			now := time.Now()
			for _, m := range b.GetMappings() {
				if m.GetService() == "redis.bench" {
					arrivals <- arrival{m.GetListenPort(), now}
				}
			}
		}
	}()
	waitPort := func(p int, timeout time.Duration) (time.Time, error) {
		deadline := time.After(timeout)
		for {
			select {
			case a, ok := <-arrivals:
				if !ok {
					return time.Time{}, fmt.Errorf("stream closed")
				}
				if int(a.port) == p {
					return a.at, nil
				}
			case <-deadline:
				return time.Time{}, fmt.Errorf("port %d never arrived", p)
			}
		}
	}
	if _, err := waitPort(port, 30*time.Second); err != nil {
		return fmt.Errorf("initial table: %w", err)
	}

	delays := make([]time.Duration, 0, edits)
	for i := 0; i < edits; i++ {
		port++
		written := time.Now()
		if err := writeStack(dir, port); err != nil {
			return err
		}
		at, err := waitPort(port, 30*time.Second)
		if err != nil {
			return fmt.Errorf("edit %d: %w", i+1, err)
		}
		delays = append(delays, at.Sub(written))
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	pct := func(p float64) time.Duration { return delays[int(float64(len(delays)-1)*p)] }
	p99 := pct(0.99)
	fmt.Printf("propagation (file written -> subscriber has the table), %d edits, reload_debounce %s:\n", edits, debounce)
	fmt.Printf("  p50 %s  p99 %s  max %s  (target p99 < %s)\n", pct(0.50).Round(time.Millisecond),
		p99.Round(time.Millisecond), delays[len(delays)-1].Round(time.Millisecond), target)
	if p99 > target {
		return fmt.Errorf("p99 %s is above the target %s", p99.Round(time.Millisecond), target)
	}
	return nil
}

// writeStack replaces the stack file atomically (write, then rename), as deploy tools do.
func writeStack(dir string, port int) error {
	tmp := filepath.Join(dir, ".bench.hcl.tmp")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(stackTmpl, port)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "bench.hcl"))
}
