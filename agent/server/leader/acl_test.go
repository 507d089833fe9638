package leader_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/server/leader"
)

// The shipped server policy plus write on the server's own Consul node (for the leader check,
// website/docs/ha.md) is all a candidate needs; without the node rule it fails clearly and
// keeps retrying instead of leading on a session no check guards.
func TestCampaignUnderACL(t *testing.T) {
	srv := consultest.StartWith(t, consultest.Options{ACL: true})
	mgmt := srv.Client(t)
	_, file, _, _ := runtime.Caller(0)
	shipped, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "consul", "acl-server.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	client := func(rules string) *api.Client {
		pol, _, err := mgmt.ACL().PolicyCreate(&api.ACLPolicy{Name: fmt.Sprintf("p-%d", time.Now().UnixNano()), Rules: rules}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := mgmt.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := srv.Config()
		cfg.Token = tok.SecretID
		c, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key := fmt.Sprintf("nullnet/leader-acl-%d", time.Now().UnixNano())

	// Shipped policy alone: the check cannot be registered, so no leadership.
	bare := start(t, client(string(shipped)), key, "bare")
	time.Sleep(1500 * time.Millisecond)
	if bare.l.IsLeader() {
		t.Fatal("led without being able to register its check")
	}
	bare.stop()

	ok := start(t, client(string(shipped)+"\nnode \"consultest\" { policy = \"write\" }\n"), key, "granted")
	waitOne(t, mgmt, key, []*candidate{ok}, 15*time.Second)
	if in, held, err := leader.Current(context.Background(), mgmt, key); err != nil || !held || in.Name != "granted" {
		t.Fatalf("Current = %+v %v %v", in, held, err)
	}
}
