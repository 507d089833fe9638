package nnrun

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nullnet/nullnet/config"
)

var benchServices = []Service{
	{Name: "bench-rr", Protocol: "tcp", ListenPort: 15201, BackendPort: 5201, Timeout: "0"},
	{Name: "bench-echo", Protocol: "udp", ListenPort: 15301, BackendPort: 5301, Timeout: "5m"},
}

// loadRendered writes a rendered agent file and loads it with nullnet's loader (dev: -dev).
func loadRendered(t *testing.T, dir, hcl string, dev bool) *config.Config {
	t.Helper()
	path := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	res := config.Load([]config.Source{{Path: path}}, dev)
	if len(res.Diags) > 0 {
		var b strings.Builder
		_ = config.WriteDiagnostics(&b, res.Files, res.Diags)
		t.Fatalf("agent config does not load cleanly:\n%s\n%s", b.String(), hcl)
	}
	return res.Config
}

// The rendered files must pass nullnet's own loaders, or the bench measures a failed start.
func TestRenderedConfigLoads(t *testing.T) {
	dir := t.TempDir()
	c := loadRendered(t, dir, AgentConfig(dir, "127.0.0.1:8500", []int{14700, 14701, 18080}, benchServices), true)
	if c.Ports.HTTP != 14700 || c.Ports.GRPC != 14701 || c.Consul.Address != "127.0.0.1:8500" {
		t.Errorf("ports/consul not applied: %+v %+v", c.Ports, c.Consul)
	}
	if len(c.Client.Services) != 2 {
		t.Fatalf("host services = %d, want 2", len(c.Client.Services))
	}
	for _, s := range c.Client.Services {
		if s.Stack != "bench" {
			t.Errorf("host service %+v: want stack bench", s)
		}
	}
}

// The separate proxy agent's file loads (without -dev) with the proxy and client roles on and
// the server off, pointed at the first agent's gRPC port.
func TestProxyAgentConfigLoads(t *testing.T) {
	dir := t.TempDir()
	c := loadRendered(t, dir, ProxyAgentConfig(dir, "127.0.0.1:8500", 14710, 14701, 18081), false)
	if !c.Proxy.Enabled || !c.Client.Enabled || c.Server.Enabled {
		t.Errorf("roles: proxy %v client %v server %v; want proxy and client only", c.Proxy.Enabled, c.Client.Enabled, c.Server.Enabled)
	}
	if c.Ports.HTTP != 14710 || len(c.Proxy.Servers) != 1 || c.Proxy.Servers[0] != "127.0.0.1:14701" {
		t.Errorf("ports/servers not applied: %+v %v", c.Ports, c.Proxy.Servers)
	}
	if c.Proxy.UDPNewSessionRate != 0 || c.Proxy.UDPNewSessionRatePerPrefix != 0 {
		t.Errorf("the bench's proxy keeps new-session limits %d/%d: the idle-session figure would crawl",
			c.Proxy.UDPNewSessionRate, c.Proxy.UDPNewSessionRatePerPrefix)
	}
}

func TestStackFileLoads(t *testing.T) {
	set := config.ParseStacks([]config.StackFile{{Path: "bench.hcl", Bytes: []byte(StackFile(benchServices))}}, config.StackRules{})
	if set.Diags.HasErrors() {
		t.Fatalf("stack file does not load: %v", set.Diags)
	}
	got := map[string]config.StackService{}
	for _, s := range set.Services() {
		got[s.Name] = s
	}
	for _, want := range benchServices {
		s, ok := got[want.Name]
		if !ok {
			t.Fatalf("service %s missing from %v", want.Name, got)
		}
		if s.Protocol != want.Protocol || s.ListenPort != want.ListenPort || !s.EntryPoint {
			t.Errorf("service %s = %+v, want %+v as an entry point", want.Name, s, want)
		}
	}
}
