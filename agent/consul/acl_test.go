package consul_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

// An answer lacking what every catalog holds is blamed on ACLs only where ACLs are on: a
// Consul without ACLs that is still starting answers the same way, and must not raise a
// consul_acl_denied event naming rules no token needs.
func TestSuspectFiltered(t *testing.T) {
	why := errors.New("the answer lacks the service \"consul\"")
	cases := []struct {
		name    string
		opts    consultest.Options
		anon    bool
		wantACL bool
	}{
		{"ACLs off", consultest.Options{}, false, false},
		{"ACLs on, no token", consultest.Options{ACL: true}, true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := consultest.StartWith(t, c.opts)
			cfg := srv.Config()
			if c.anon {
				cfg.Token = ""
			}
			client, err := api.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = consul.SuspectFiltered(context.Background(), client, "listing catalog services", consul.ACLAllRead, why)
			var acl *consul.ACLError
			if got := errors.As(err, &acl); got != c.wantACL || !errors.Is(err, why) {
				t.Fatalf("got %v (an ACL error: %v), want an ACL error: %v", err, got, c.wantACL)
			}
		})
	}
}
