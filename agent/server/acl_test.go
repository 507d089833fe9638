package server_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/config"
)

// aclReader is a policy that reads the whole catalog, as a server needs.
const aclReader = `
node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
`

// aclNodesOnly reads nodes but no service: every catalog answer comes back filtered.
const aclNodesOnly = `
node_prefix "" { policy = "read" }
`

// readerServer runs a server role without a stacks directory (it only reads Consul) whose
// Consul token is token.
func readerServer(t *testing.T, c *consultest.Server, token string) (*runningServer, *events.Store) {
	t.Helper()
	cfg := c.Config()
	cfg.Token = token
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	acfg := config.Default()
	acfg.Server.Enabled = true
	logger := hclog.New(&hclog.LoggerOptions{Name: "reader", Level: hclog.LevelFromString(os.Getenv("NULLNET_TEST_LOG")), Output: testWriter{t}})
	ev := events.New(1000, logger)
	return runServer(t, server.Config{Agent: acfg, Consul: client, Events: ev, Logger: logger}), ev
}

func waitEventOf(t *testing.T, ev *events.Store, kind string, d time.Duration) events.Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		evs, _ := ev.Since(0)
		for _, e := range evs {
			if e.Kind == kind {
				return e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s event within %s", kind, d)
	return events.Event{}
}

func countEvents(ev *events.Store, kind string) int {
	n := 0
	evs, _ := ev.Since(0)
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// portMappingsStatus reads GET /v1/port-mappings: status and body.
func portMappingsStatus(t *testing.T, rs *runningServer) (int, string) {
	t.Helper()
	resp, err := http.Get(rs.http.URL + "/v1/port-mappings")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With Consul ACLs on (default deny), an answer Consul refused or filtered is an error, never
// an empty truth: a server without a token publishes no table at all (not an empty one that
// would make proxies close every listener), and one whose token loses its rights keeps the
// last good table; both say which ACL is missing (consul_acl_denied).
func TestStacks_ConsulACLs(t *testing.T) {
	c := consultest.StartWith(t, consultest.Options{ACL: true})
	admin := c.Client(t)
	// The definitions are in Consul, mirrored by a server holding the management token.
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/app.hcl", []byte(fmt.Sprintf(appStack, 6379)), 0o644); err != nil {
		t.Fatal(err)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "writer", Level: hclog.LevelFromString(os.Getenv("NULLNET_TEST_LOG")), Output: testWriter{t}})
	wcfg := config.Default()
	wcfg.Server.Enabled, wcfg.Server.StacksDir = true, dir
	writer := runServer(t, server.Config{Agent: wcfg, Consul: admin, Events: events.New(100, logger), Logger: logger})
	good := "tcp/6379=redis.internal:0 udp/53=dns.internal:30"
	ws := subscribeTo(t, writer)
	ws.waitTable(t, good, 30*time.Second)

	t.Run("no token: no table, an event naming the ACL", func(t *testing.T) {
		rs, ev := readerServer(t, c, "")
		sub := subscribeTo(t, rs)
		e := waitEventOf(t, ev, events.ConsulACLDenied, 20*time.Second)
		if !strings.Contains(e.Fields["missing_acl"], "read") || e.Severity != events.Error {
			t.Errorf("event %+v does not name the missing ACL", e)
		}
		time.Sleep(2 * time.Second) // several retries' worth
		if code, body := portMappingsStatus(t, rs); code != http.StatusServiceUnavailable {
			t.Errorf("GET /v1/port-mappings without a token: %d %s, want 503 (no table known)", code, body)
		}
		if sz := sub.sizes(); len(sz) != 0 {
			t.Errorf("a subscriber received tables %v from ACL-filtered answers", sz)
		}
		if n := countEvents(ev, events.ConsulACLDenied); n > 3 {
			t.Errorf("%d consul_acl_denied events: want one per watch per outage", n)
		}
	})

	t.Run("token loses its rights: the last good table stays", func(t *testing.T) {
		pol, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: "nullnet-reader", Rules: aclReader}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rs, ev := readerServer(t, c, tok.SecretID)
		sub := subscribeTo(t, rs)
		sub.waitTable(t, good, 20*time.Second)
		if n := countEvents(ev, events.ConsulACLDenied); n != 0 {
			t.Fatalf("%d consul_acl_denied events with a sufficient token", n)
		}

		// The policy shrinks to nodes only, then the catalog changes: the next answers are
		// filtered.
		pol.Rules = aclNodesOnly
		if _, _, err := admin.ACL().PolicyUpdate(pol, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := os.WriteFile(dir+"/app.hcl", []byte(fmt.Sprintf(appStack, 6400)), 0o644); err != nil {
			t.Fatal(err)
		}
		ws.waitTable(t, "tcp/6400=redis.internal:0 udp/53=dns.internal:30", 20*time.Second)
		waitEventOf(t, ev, events.ConsulACLDenied, 20*time.Second)
		time.Sleep(time.Second)
		sub.mu.Lock()
		for i, b := range sub.bundles {
			if r := render(b); r != good {
				t.Errorf("bundle %d is %q: an answer filtered by ACLs was published", i, r)
			}
		}
		sub.mu.Unlock()
		if code, body := portMappingsStatus(t, rs); code != http.StatusOK || !strings.Contains(body, "6379") {
			t.Errorf("GET /v1/port-mappings: %d %s, want the last good table", code, body)
		}

		// Rights back: the server catches up.
		pol.Rules = aclReader
		if _, _, err := admin.ACL().PolicyUpdate(pol, nil); err != nil {
			t.Fatal(err)
		}
		sub.waitTable(t, "tcp/6400=redis.internal:0 udp/53=dns.internal:30", 30*time.Second)
	})
}
