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
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
)

// Service is one relayed service: the proxy listens on ListenPort and relays to BackendPort,
// where the bench's backend runs (listening on all addresses, as host services must).
type Service struct {
	Name        string
	Protocol    string // tcp, udp, tls or http (the backend of tls and http services is a TCP host service)
	ListenPort  int
	BackendPort int
	// Timeout is the stack timeout; "0" never idles out.
	Timeout string
	// BackendAddr is the backend's address (default 127.0.0.1).
	BackendAddr string
	// Extra are further lines of the service block (client policy keys: `allow = [...]`).
	Extra []string
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
	// Remote, when set (with Netns), runs the host services on a second agent (client role only)
	// in another namespace, as on a separate service host.
	Remote *Remote
	// SeparateProxy (without Netns) runs the proxy role in an agent process of its own, as on
	// an ingress host: the first agent keeps the server and the host services, the second runs
	// proxy and client only. Its process is the relay the figures measure (Agent.Relay).
	SeparateProxy bool
	// HTTPSPort, when set, opens the proxy's HTTPS listener there (proxy.https_addr), and
	// CertsDir is the server's certificate directory (server.certs_dir).
	HTTPSPort int
	CertsDir  string
}

// Remote is the service host of a two-host run.
type Remote struct {
	Netns string
	// ProxyHostAddr is the proxy host's address as seen from the service host (Consul and the
	// server's gRPC port are reached there).
	ProxyHostAddr string
	// AdvertiseAddr is the service host's address the proxy dials (with network = "direct").
	AdvertiseAddr string
}

// Agent is a running Consul plus nullnet agent.
type Agent struct {
	*proc.Process
	remote     *proc.Process
	proxy      *proc.Process // SeparateProxy
	stopConsul func()
	// relayCfg is the relay's configuration file and what was written there (ProxyAdmission).
	relayCfg, relayHCL string
	HTTPAddr           string
	// ConsulAddr is Consul's HTTP address, reachable from here only without Netns.
	ConsulAddr string
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
	local := cfg.Services
	if cfg.Remote != nil {
		local = nil
	}
	hcl := cfg.withHTTPS(AgentConfig(cfg.Dir, consulAddr, ports, local))
	if cfg.SeparateProxy {
		hcl = strings.Replace(hcl, "proxy {\n", "proxy {\n  enabled   = false\n", 1)
	}
	if cfg.Remote != nil {
		hcl += "bind_addr = \"0.0.0.0\"\n" // the service host's agent dials our gRPC port
	}
	if err := os.WriteFile(agentCfg, []byte(hcl), 0o644); err != nil {
		return fail(err)
	}
	name, args := wrap(cfg.Netns, cfg.Binary, "agent", "-dev", "-config-file", agentCfg, "-log-level", "warn")
	p, err := proc.Start("nullnet", cfg.Dir, []string{"CONSUL_HTTP_ADDR=" + consulAddr}, name, args...)
	if err != nil {
		return fail(err)
	}
	a := &Agent{Process: p, stopConsul: stopConsul, HTTPAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), ConsulAddr: consulAddr,
		relayCfg: agentCfg, relayHCL: hcl}
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
	if cfg.Remote != nil {
		if a.remote, err = startRemote(wctx, cfg, ports[1]); err != nil {
			a.Stop()
			return nil, fmt.Errorf("nullnet agent on the service host: %w", err)
		}
	}
	if cfg.SeparateProxy {
		if a.proxy, a.relayCfg, a.relayHCL, err = startProxyAgent(wctx, cfg, consulAddr, ports[1], ports[2]); err != nil {
			a.Stop()
			return nil, fmt.Errorf("nullnet proxy agent: %w", err)
		}
	}
	return a, nil
}

// Relay is the process that relays traffic: the proxy agent with SeparateProxy, else the
// agent.
func (a *Agent) Relay() *proc.Process {
	if a.proxy != nil {
		return a.proxy
	}
	return a.Process
}

// LogTail is the end of the agent's log and, with SeparateProxy, of the proxy agent's.
func (a *Agent) LogTail(n int) string {
	if a.proxy == nil {
		return a.Process.LogTail(n)
	}
	return a.Process.LogTail(n/2) + "\n[proxy agent] " + a.proxy.LogTail(n/2)
}

// withHTTPS adds the HTTPS settings to an agent configuration rendered by AgentConfig or
// ProxyAgentConfig: the listener to its proxy block, the certificate directory to its server
// block (each only where the block exists). The HTTPS listener is off unless asked for, so
// other figures never bind a second port.
func (cfg Config) withHTTPS(hcl string) string {
	https := `""`
	if cfg.HTTPSPort > 0 {
		https = fmt.Sprintf("\"127.0.0.1:%d\"", cfg.HTTPSPort)
	}
	hcl = strings.Replace(hcl, "proxy {\n", "proxy {\n  https_addr = "+https+"\n", 1)
	if cfg.CertsDir != "" {
		hcl = strings.Replace(hcl, "server {\n", fmt.Sprintf("server {\n  certs_dir = %q\n", cfg.CertsDir), 1)
	}
	return hcl
}

// ProxyAgentConfig renders the SeparateProxy agent's configuration: proxy and client roles,
// its API on apiPort, the server on this host's serverGRPC port.
func ProxyAgentConfig(dir, consulAddr string, apiPort, serverGRPC, proxyHTTP int) string {
	servers := fmt.Sprintf("[\"127.0.0.1:%d\"]", serverGRPC)
	var b strings.Builder
	fmt.Fprintf(&b, "node_name = \"nnbench-proxy\"\ndata_dir = %q\n", filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "ports {\n  http = %d\n}\nconsul {\n  address = %q\n}\n", apiPort, consulAddr)
	fmt.Fprintf(&b, "proxy {\n  enabled   = true\n  bind_addr = \"127.0.0.1\"\n  servers   = %s\n  http_addr = \"127.0.0.1:%d\"\n%s}\n", servers, proxyHTTP, benchAdmission)
	fmt.Fprintf(&b, "client {\n  enabled = true\n  servers = %s\n}\n", servers)
	return b.String()
}

// benchAdmission lifts the proxy's new-session rate limits: the idle-session figure opens
// 100,000 UDP sessions as fast as it can, which the defaults (1000/s per listener) would
// stretch to minutes. The flood behaviour under the defaults is measured by
// TestUDPFloodEstablishedFlow (agent/proxy).
const benchAdmission = "  udp_new_session_rate            = 0\n  udp_new_session_rate_per_prefix = 0\n"

// startProxyAgent runs the ingress host's agent of a SeparateProxy run: proxy and client roles,
// no host services, the server reached on this host's gRPC port.
func startProxyAgent(ctx context.Context, cfg Config, consulAddr string, serverGRPC, proxyHTTP int) (*proc.Process, string, string, error) {
	dir := filepath.Join(cfg.Dir, "proxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", "", err
	}
	apiPort, err := proc.FreePort()
	if err != nil {
		return nil, "", "", err
	}
	path := filepath.Join(dir, "agent.hcl")
	hcl := cfg.withHTTPS(ProxyAgentConfig(dir, consulAddr, apiPort, serverGRPC, proxyHTTP))
	if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
		return nil, "", "", err
	}
	p, err := proc.Start("nullnet-proxy", dir, []string{"CONSUL_HTTP_ADDR=" + consulAddr}, cfg.Binary,
		"agent", "-config-file", path, "-log-level", "warn")
	if err != nil {
		return nil, "", "", err
	}
	if err := p.WaitTCP(ctx, "127.0.0.1:"+strconv.Itoa(apiPort)); err != nil {
		p.Stop(5 * time.Second)
		return nil, "", "", err
	}
	return p, path, hcl, nil
}

// ProxyAdmission switches the relay's UDP new-session limits between the bench's (none, for the
// idle-session figure) and the agent's defaults (for the flood figure): it rewrites the relay's
// configuration and reloads it with SIGHUP (the limits are reloadable), then gives the reload
// a moment.
func (a *Agent) ProxyAdmission(defaults bool) error {
	hcl := a.relayHCL
	if defaults {
		hcl = strings.Replace(hcl, benchAdmission, "", 1)
	}
	if err := os.WriteFile(a.relayCfg, []byte(hcl), 0o644); err != nil {
		return err
	}
	if err := a.Relay().Signal(syscall.SIGHUP); err != nil {
		return err
	}
	time.Sleep(time.Second)
	return nil
}

// startRemote runs the service host's agent: client role only, its host services registered in
// the proxy host's Consul, advertising the address the proxy dials.
func startRemote(ctx context.Context, cfg Config, serverGRPC int) (*proc.Process, error) {
	r := cfg.Remote
	dir := filepath.Join(cfg.Dir, "remote")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "node_name = \"nnbench-sv\"\ndata_dir = %q\nbind_addr = \"0.0.0.0\"\nadvertise_addr = %q\n", filepath.Join(dir, "data"), r.AdvertiseAddr)
	fmt.Fprintf(&b, "ports {\n  http = 4700\n  grpc = 4701\n}\nconsul {\n  address = \"%s:8500\"\n}\n", r.ProxyHostAddr)
	fmt.Fprintf(&b, "client {\n  enabled = true\n  servers = [\"%s:%d\"]\n", r.ProxyHostAddr, serverGRPC)
	for _, s := range cfg.Services {
		fmt.Fprintf(&b, "  service %q {\n    stack          = \"bench\"\n    port           = %d\n    protocol       = %q\n    check_interval = \"5s\"\n  }\n",
			s.Name, s.BackendPort, s.Protocol)
	}
	b.WriteString("}\n")
	path := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	name, args := wrap(r.Netns, cfg.Binary, "agent", "-config-file", path, "-log-level", "warn")
	p, err := proc.Start("nullnet-remote", dir, nil, name, args...)
	if err != nil {
		return nil, err
	}
	if err := probeIn(ctx, p, r.Netns, "http://127.0.0.1:4700/v1/agent/self"); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
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
	// The same flags as consultest.Launch; ports are free in a fresh namespace. The HTTP API
	// listens on every address of the namespace so that a service host's agent can reach it.
	hcl := "ports {\n  grpc_tls = -1\n}\naddresses {\n  http = \"0.0.0.0\"\n}\n"
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
	if a.proxy != nil {
		a.proxy.Stop(10 * time.Second)
	}
	if a.remote != nil {
		a.remote.Stop(10 * time.Second)
	}
	a.Process.Stop(10 * time.Second)
	a.stopConsul()
}

// StackFile renders the bench stack.
func StackFile(svcs []Service) string {
	var b strings.Builder
	b.WriteString("stack \"bench\" {\n")
	for _, s := range svcs {
		if s.Protocol == "http" { // routed by Host: no listen_port
			fmt.Fprintf(&b, "  service %q {\n    protocol    = \"http\"\n    timeout     = %q\n  }\n", s.Name, s.Timeout)
			continue
		}
		fmt.Fprintf(&b, "  service %q {\n    protocol    = %q\n    listen_port = %d\n    timeout     = %q\n",
			s.Name, s.Protocol, s.ListenPort, s.Timeout)
		for _, l := range s.Extra {
			fmt.Fprintf(&b, "    %s\n", l)
		}
		b.WriteString("  }\n")
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
	fmt.Fprintf(&b, "proxy {\n  servers   = %s\n  http_addr = \"127.0.0.1:%d\"\n%s}\n", grpc, ports[2], benchAdmission)
	fmt.Fprintf(&b, "client {\n  servers = %s\n", grpc)
	for _, s := range svcs {
		// No address: the service listens on all addresses, as the client requires of a host
		// service (a loopback-only listener is reported unreachable over the overlay).
		addr := ""
		if s.BackendAddr != "" {
			addr = fmt.Sprintf("    address        = %q\n", s.BackendAddr)
		}
		proto := s.Protocol
		if proto == "tls" || proto == "http" {
			proto = "tcp" // host services are tcp or udp: a tls or http backend listens on TCP
		}
		fmt.Fprintf(&b, "  service %q {\n    stack          = \"bench\"\n    port           = %d\n    protocol       = %q\n%s    check_interval = \"5s\"\n  }\n",
			s.Name, s.BackendPort, proto, addr)
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

// WaitHealthy polls Consul until every named service has a passing instance: the proxy refuses
// connections for a service without a healthy replica, and checks run every check_interval.
func (a *Agent) WaitHealthy(ctx context.Context, names []string) error {
	cfg := api.DefaultConfig()
	cfg.Address = a.ConsulAddr
	c, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	for _, name := range names {
		for {
			entries, _, err := c.Health().Service(name, "", true, (&api.QueryOptions{}).WithContext(ctx))
			if err == nil && len(entries) > 0 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("service %s never healthy in Consul (last error: %v)", name, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}
