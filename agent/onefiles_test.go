package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// oneProcessFiles is what the one-process agent tests write: every role in one agent on
// loopback ports of its own (so parallel runs never clash), against a real Consul.
type oneProcessFiles struct {
	Node   string
	Consul string // the Consul agent's HTTP address
	Stack  string // the stack file's text, written into the agent's stacks_dir
	// ProxyHTTPPort is the proxy's HTTP router port on 127.0.0.1 (0: a free one).
	ProxyHTTPPort int
	// ProxyHTTPSPort is the proxy's HTTPS listener port on 127.0.0.1 (0: a free one).
	ProxyHTTPSPort int
	// ServerExtra, ProxyExtra and ClientExtra are HCL lines added to the server, proxy and
	// client blocks.
	ServerExtra, ProxyExtra, ClientExtra string
}

// write writes the stacks directory and the agent config into dir and returns the config
// file and the agent's HTTP API port.
func (f oneProcessFiles) write(t *testing.T, dir string) (cfgFile string, httpPort int) {
	t.Helper()
	stacks := filepath.Join(dir, "stacks")
	if err := os.Mkdir(stacks, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stacks, "stack.hcl"), []byte(f.Stack), 0o644); err != nil {
		t.Fatal(err)
	}
	httpPort, grpcPort := freePort(t), freePort(t)
	if f.ProxyHTTPPort == 0 {
		f.ProxyHTTPPort = freePort(t)
	}
	if f.ProxyHTTPSPort == 0 {
		f.ProxyHTTPSPort = freePort(t)
	}
	cfgFile = filepath.Join(dir, "agent.hcl")
	cfg := fmt.Sprintf(`
node_name = %q
ports {
  http = %d
  grpc = %d
}
consul {
  address = %q
}
server {
  stacks_dir = %q
%s
}
proxy {
  http_addr = "127.0.0.1:%d"
  https_addr = "127.0.0.1:%d"
  servers   = ["127.0.0.1:%d"]
%s
}
client {
  servers = ["127.0.0.1:%d"]
%s
}
`, f.Node, httpPort, grpcPort, f.Consul, stacks, f.ServerExtra, f.ProxyHTTPPort, f.ProxyHTTPSPort, grpcPort, f.ProxyExtra, grpcPort, f.ClientExtra)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgFile, httpPort
}
