package acme

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/acme/pebbletest"
)

// docsACL is the ACL rule block of the HTTPS page's "Consul ACL" section: the test uses the
// documented rules themselves, so they cannot drift from what the issuer needs.
func docsACL(t *testing.T) string {
	t.Helper()
	page, err := os.ReadFile(filepath.Join("..", "..", "..", "website", "docs", "https.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)### Consul ACL\n.*?```hcl\n(.*?)```").FindSubmatch(page)
	if m == nil {
		t.Fatal("no hcl block under \"### Consul ACL\" in website/docs/https.md")
	}
	return string(m[1])
}

// With Consul ACLs on (default deny), a token holding only the documented rules is enough to
// register, order, store and serve; a token without them is refused and orders nothing.
func TestDocumentedACLIsEnough(t *testing.T) {
	cs := consultest.StartWith(t, consultest.Options{ACL: true})
	mgmtCfg := cs.Config()
	mgmtCfg.Token = cs.ManagementToken
	mgmt, err := api.NewClient(mgmtCfg)
	if err != nil {
		t.Fatal(err)
	}
	var pol *api.ACLPolicy
	deadline := time.Now().Add(15 * time.Second)
	for {
		pol, _, err = mgmt.ACL().PolicyCreate(&api.ACLPolicy{Name: "nullnet-acme", Rules: docsACL(t)}, nil)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // ACL bootstrap completes shortly after leadership
	}
	if err != nil {
		t.Fatalf("policy from the docs: %v", err)
	}
	tok, _, err := mgmt.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clientWith := func(token string) *api.Client {
		c := cs.Config()
		c.Token = token
		cl, err := api.NewClient(c)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}

	s := newSink(t)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: s.httpPort, TLSPort: s.tlsPort})
	e := &env{consul: clientWith(tok.SecretID), pebble: p, sink: s, events: events.New(1000, nil), prefix: "nullnet/acme/"}
	i, _ := e.issuer(t, "acl", nil, nil)
	i.SetDomains([]string{"acl.example.com"})
	c := s.waitCert(t, "acl.example.com", 60*time.Second, nil)
	verifyChain(t, e, c, "acl.example.com")

	// Without the rules: nothing readable, nothing ordered.
	other := newSink(t)
	e2 := &env{consul: clientWith("00000000-0000-4000-8000-000000000000"), pebble: p, sink: other, events: events.New(1000, nil), prefix: "nullnet/acme/"}
	i2, _ := e2.issuer(t, "no-acl", other, nil)
	i2.SetDomains([]string{"acl.example.com"})
	time.Sleep(2 * time.Second)
	if _, ok := other.cert("acl.example.com"); ok || i2.Orders() != 0 || p.Issued() != 1 {
		t.Fatalf("without the documented rules: served %v, orders %d, pebble issued %d", ok, i2.Orders(), p.Issued())
	}
}
