package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

const aclMgmtToken = "5e1f6c1e-0000-4000-8000-000000000001"

// startACLConsul runs Consul with ACLs on and default deny.
func startACLConsul(t *testing.T) (*consultest.Server, *api.Client) {
	srv := consultest.StartWith(t, consultest.Options{ExtraHCL: fmt.Sprintf(`
acl {
  enabled        = true
  default_policy = "deny"
  tokens {
    initial_management = %q
    agent              = %q
  }
}
`, aclMgmtToken, aclMgmtToken)})
	cfg := srv.Config()
	cfg.Token = aclMgmtToken
	mgmt, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, mgmt
}

// tokenFor creates a token holding the policy file shipped in scripts/consul, verbatim.
func tokenFor(t *testing.T, mgmt *api.Client, file string) string {
	t.Helper()
	rules, err := os.ReadFile(filepath.Join("..", "scripts", "consul", file))
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimSuffix(file, ".hcl")
	var pol *api.ACLPolicy
	deadline := time.Now().Add(15 * time.Second)
	for {
		pol, _, err = mgmt.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: string(rules)}, nil)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // ACL bootstrap completes shortly after leadership
	}
	if err != nil {
		t.Fatalf("creating policy %s: %v", name, err)
	}
	tok, _, err := mgmt.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.SecretID
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConsulACLPolicy runs a server against Consul with ACLs enabled (default deny), using the
// token of the documented minimal policy (scripts/consul/acl-server.hcl): stack definitions are
// mirrored and the agent registers itself. Without a token nothing reaches the catalog.
func TestConsulACLPolicy(t *testing.T) {
	srv, mgmt := startACLConsul(t)
	serverToken := tokenFor(t, mgmt, "acl-server.hcl")
	stackDef := func(dir string) {
		os.WriteFile(filepath.Join(dir, "acl.hcl"), []byte(`
stack "acl" {
  service "redis.acl" {
    protocol    = "tcp"
    listen_port = 16379
    timeout     = "30s"
  }
}
`), 0o644)
	}
	defs := func() int {
		svcs, _, err := mgmt.Catalog().Service("redis.acl", "nullnet-definition", nil)
		if err != nil {
			return -1
		}
		return len(svcs)
	}

	t.Run("without a token nothing is written", func(t *testing.T) {
		stop := runAgentWithStacks(t, srv.HTTPAddr, "", stackDef)
		time.Sleep(3 * time.Second) // long enough for a mirror write to have happened if allowed
		if n := defs(); n != 0 {
			t.Fatalf("a server without a token wrote %d definition(s)", n)
		}
		stop()
	})
	t.Run("with the documented server policy", func(t *testing.T) {
		stop := runAgentWithStacks(t, srv.HTTPAddr, serverToken, stackDef)
		defer stop()
		waitFor(t, "the definition mirrored under ACLs", 20*time.Second, func() bool { return defs() == 1 })
		waitFor(t, "the server registered as service nullnet", 20*time.Second, func() bool {
			svcs, _, err := mgmt.Catalog().Service("nullnet", "server", nil)
			return err == nil && len(svcs) == 1
		})
	})
}

// TestConsulACLAgentPolicy: a client agent with the documented agent policy
// (scripts/consul/acl-agent.hcl) registers itself and its host service "sshd".
func TestConsulACLAgentPolicy(t *testing.T) {
	srv, mgmt := startACLConsul(t)
	token := tokenFor(t, mgmt, "acl-agent.hcl")
	cfg := testConfig(t, srv.HTTPAddr, `
client {
  enabled = true
  servers = ["127.0.0.1:1"]
  service "sshd" {
    stack = "infra"
    port  = 22
  }
}
`)
	cfg.Server.Enabled = false
	cfg.NodeName = "acl-client"
	cfg.Consul.Token = token
	a, err := New(cfg, hclog.New(&hclog.LoggerOptions{Name: "acl-client", Level: hclog.Warn, Output: testWriter{t}}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for _, name := range []string{"nullnet", "sshd"} {
		waitFor(t, name+" registered under ACLs", 20*time.Second, func() bool {
			svcs, _, err := mgmt.Catalog().Service(name, "", nil)
			return err == nil && len(svcs) == 1
		})
	}
}

// runAgentWithStacks starts a server agent whose stacks dir is prepared by prep.
func runAgentWithStacks(t *testing.T, consulAddr, token string, prep func(dir string)) func() {
	t.Helper()
	cfg := testConfig(t, consulAddr, "")
	prep(cfg.Server.StacksDir)
	cfg.Consul.Token = token
	cfg.Consul.TokenFile = ""
	a, err := New(cfg, hclog.New(&hclog.LoggerOptions{Name: "acl", Level: hclog.Warn, Output: testWriter{t}}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}
