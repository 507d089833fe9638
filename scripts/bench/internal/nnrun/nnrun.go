// Package nnrun runs nullnet the way a user would for the loopback figures: a Consul dev agent
// and `nullnet agent -dev` (server, client and proxy in one process, network = "direct"), with a
// stack file mapping each bench listener to a host service registered through the agent's own
// client block. Traffic then crosses the real proxy, resolved by the real server from Consul.
package nnrun

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
)

// Service is one relayed service: the proxy listens on ListenPort and relays to BackendPort on
// 127.0.0.1, where the bench's backend runs.
type Service struct {
	Name        string
	Protocol    string // tcp or udp
	ListenPort  int
	BackendPort int
	// Timeout is the stack timeout; "0" never idles out.
	Timeout string
	// BackendAddr is the backend's address (default 127.0.0.1).
	BackendAddr string
}

// Config says what to start.
type Config struct {
	Binary    string // bin/nullnet
	ConsulBin string
	Dir       string // config, stacks, data, logs
	Services  []Service
	// Netns, when set, runs Consul and the agent inside that network namespace. Nothing there
	// can be dialled from here, so readiness is probed with curl inside the namespace.
	Netns string
}

// Agent is a running Consul plus nullnet agent.
type Agent struct {
	*proc.Process
	stopConsul func()
	HTTPAddr   string
}

// Start launches Consul and the nullnet agent and returns once the agent runs. It does not wait
// for traffic to flow; callers probe their own routes (see WaitTCPRelay and WaitUDPRelay).
func Start(ctx context.Context, cfg Config) (*Agent, error) {
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("nullnet binary %s: %w (run make build)", cfg.Binary, err)
	}
	consulAddr, stopConsul, err := startConsul(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("starting consul: %w", err)
	}
	fail := func(err error) (*Agent, error) {
		stopConsul()
		return nil, err
	}
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = proc.FreePort(); err != nil {
			return fail(err)
		}
	}
	stacks := filepath.Join(cfg.Dir, "stacks")
	if err := os.MkdirAll(stacks, 0o755); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(stacks, "bench.hcl"), []byte(StackFile(cfg.Services)), 0o644); err != nil {
		return fail(err)
	}
	agentCfg := filepath.Join(cfg.Dir, "agent.hcl")
	if err := os.WriteFile(agentCfg, []byte(AgentConfig(cfg.Dir, consulAddr, ports, cfg.Services)), 0o644); err != nil {
		return fail(err)
	}
	name, args := wrap(cfg.Netns, cfg.Binary, "agent", "-dev", "-config-file", agentCfg, "-log-level", "warn")
	p, err := proc.Start("nullnet", cfg.Dir, []string{"CONSUL_HTTP_ADDR=" + consulAddr}, name, args...)
	if err != nil {
		return fail(err)
	}
	a := &Agent{Process: p, stopConsul: stopConsul, HTTPAddr: "127.0.0.1:" + strconv.Itoa(ports[0])}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if cfg.Netns != "" {
		err = probeIn(wctx, p, cfg.Netns, "http://"+a.HTTPAddr+"/v1/agent/self")
	} else {
		err = p.WaitTCP(wctx, a.HTTPAddr)
	}
	if err != nil {
		a.Stop()
		return nil, fmt.Errorf("nullnet agent: %w", err)
	}
	return a, nil
}

// startConsul runs a Consul dev agent, in cfg.Netns when set, and returns its HTTP address.
func startConsul(ctx context.Context, cfg Config) (string, func(), error) {
	if cfg.Netns == "" {
		c, err := consultest.Launch(cfg.ConsulBin, consultest.Options{}, cfg.Dir)
		if err != nil {
			return "", nil, err
		}
		return c.HTTPAddr, c.Stop, nil
	}
	// The same flags as consultest.Launch; ports are free in a fresh namespace.
	hcl := "ports {\n  grpc_tls = -1\n}\n"
	cfgFile := filepath.Join(cfg.Dir, "consul.hcl")
	if err := os.WriteFile(cfgFile, []byte(hcl), 0o644); err != nil {
		return "", nil, err
	}
	name, args := wrap(cfg.Netns, cfg.ConsulBin, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-node=nnbench", "-log-level=warn", "-config-file="+cfgFile, "-data-dir="+filepath.Join(cfg.Dir, "consul-data"))
	p, err := proc.Start("consul", cfg.Dir, nil, name, args...)
	if err != nil {
		return "", nil, err
	}
	stop := func() { p.Stop(5 * time.Second) }
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := probeIn(wctx, p, cfg.Netns, "http://127.0.0.1:8500/v1/status/leader"); err != nil {
		stop()
		return "", nil, err
	}
	return "127.0.0.1:8500", stop, nil
}

func wrap(netns, name string, args ...string) (string, []string) {
	if netns == "" {
		return name, args
	}
	return "ip", append([]string{"netns", "exec", netns, name}, args...)
}

// probeIn polls url with curl inside netns until it answers 2xx with a non-empty body other
// than Consul's `""` (no leader yet).
func probeIn(ctx context.Context, p *proc.Process, netns, url string) error {
	for {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", netns, "curl", "-fsS", "-m", "2", url).Output()
		if body := strings.TrimSpace(string(out)); err == nil && body != "" && body != `""` {
			return nil
		}
		if exited, perr := p.Exited(); exited {
			return fmt.Errorf("%s exited (%v): %s", p.Name, perr, p.LogTail(800))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer from %s in %s: %w", url, netns, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops the agent, then Consul.
func (a *Agent) Stop() {
	a.Process.Stop(10 * time.Second)
	a.stopConsul()
}

// StackFile renders the bench stack.
func StackFile(svcs []Service) string {
	var b strings.Builder
	b.WriteString("stack \"bench\" {\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, "  service %q {\n    protocol    = %q\n    listen_port = %d\n    timeout     = %q\n  }\n",
			s.Name, s.Protocol, s.ListenPort, s.Timeout)
	}
	b.WriteString("}\n")
	return b.String()
}

// AgentConfig renders the -config-file laid over -dev: free ports (several benches or a
// `make dev` may run on this machine), Consul's address, and the backends as host services.
// ports are HTTP API, gRPC, proxy HTTP.
func AgentConfig(dir, consulAddr string, ports []int, svcs []Service) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node_name = \"nnbench\"\ndata_dir = %q\n", filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "ports {\n  http = %d\n  grpc = %d\n}\n", ports[0], ports[1])
	fmt.Fprintf(&b, "consul {\n  address = %q\n}\n", consulAddr)
	fmt.Fprintf(&b, "server {\n  stacks_dir = %q\n}\n", filepath.Join(dir, "stacks"))
	grpc := fmt.Sprintf("[\"127.0.0.1:%d\"]", ports[1])
	fmt.Fprintf(&b, "proxy {\n  servers   = %s\n  http_addr = \"127.0.0.1:%d\"\n}\n", grpc, ports[2])
	fmt.Fprintf(&b, "client {\n  servers = %s\n", grpc)
	for _, s := range svcs {
		addr := s.BackendAddr
		if addr == "" {
			addr = "127.0.0.1"
		}
		fmt.Fprintf(&b, "  service %q {\n    stack          = \"bench\"\n    port           = %d\n    protocol       = %q\n    address        = %q\n    check_interval = \"1s\"\n  }\n",
			s.Name, s.BackendPort, s.Protocol, addr)
	}
	b.WriteString("}\n")
	return b.String()
}

// WaitTCPRelay polls until one connection through addr gets a whole answer from the bench's
// TCP responder (the port table reached the proxy, the replica is healthy, the session exists).
func WaitTCPRelay(ctx context.Context, addr string, probe func(string) error) error {
	var last error
	for {
		if last = probe(addr); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer through %s: %v", addr, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitUDPRelay polls until a datagram sent to addr comes back from the bench's UDP echo.
func WaitUDPRelay(ctx context.Context, addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for {
		_, _ = c.Write([]byte("nullnet-bench-probe"))
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "nullnet-bench-probe" {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no UDP echo through %s: %w", addr, ctx.Err())
		}
	}
}
