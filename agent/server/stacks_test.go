package server_test

import (
	"errors"
	"fmt"
	"net/http"
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

const appStack = `stack "my-app" {
  service "redis.internal" {
    protocol    = "tcp"
    listen_port = %d
    timeout     = 0
  }
  service "dns.internal" {
    protocol    = "udp"
    listen_port = 53
    timeout     = "30s"
  }
  service "color.com" {
    timeout = "5m"
  }
  service "fs.color.com" {}
}
`

// The seed path: a stack file reaches the Consul catalog with its meta and a subscribed proxy
// within 1 s, and every later edit (port change, service removal, file removal) follows.
func TestStacks_FileToCatalogToSubscriber(t *testing.T) {
	e := newStackEnv(t, nil, nil)
	sub := e.subscribe()
	sub.waitTable(t, "", 20*time.Second) // the first, empty, table

	written := time.Now()
	e.write("app.hcl", fmt.Sprintf(appStack, 6379))
	at := sub.waitTable(t, "tcp/6379=redis.internal:0 udp/53=dns.internal:30", 5*time.Second)
	if d := at.Sub(written); d > time.Second {
		t.Errorf("file written -> subscriber has the table took %v, want <= 1s", d)
	}
	defs := e.definitions()
	if time.Since(written) > 2*time.Second {
		t.Logf("catalog read late; timing not asserted for it")
	}
	want := map[string]map[string]string{
		"redis.internal": {server.MetaStack: "my-app", server.MetaProtocol: "tcp", server.MetaListenPort: "6379", server.MetaTimeout: "0"},
		"dns.internal":   {server.MetaStack: "my-app", server.MetaProtocol: "udp", server.MetaListenPort: "53", server.MetaTimeout: "30"},
		"color.com":      {server.MetaStack: "my-app", server.MetaProtocol: "http", server.MetaTimeout: "300"},
		"fs.color.com":   {server.MetaStack: "my-app", server.MetaProtocol: "http"},
	}
	if len(defs) != len(want) {
		t.Fatalf("catalog has %d definitions, want %d", len(defs), len(want))
	}
	for name, meta := range want {
		d := defs[name]
		if d == nil {
			t.Fatalf("%s missing from catalog", name)
		}
		if fmt.Sprint(d.Meta) != fmt.Sprint(meta) || len(d.Tags) != 1 || d.Tags[0] != server.DefinitionTag ||
			d.ID != "nullnet-def-my-app-"+name {
			t.Errorf("%s: id %s tags %v meta %v, want meta %v", name, d.ID, d.Tags, d.Meta, meta)
		}
	}

	// Port change.
	e.write("app.hcl", fmt.Sprintf(appStack, 6380))
	sub.waitTable(t, "tcp/6380=redis.internal:0 udp/53=dns.internal:30", 5*time.Second)
	e.waitCatalog("port 6380", func(m map[string]*api.AgentService) bool {
		return m["redis.internal"] != nil && m["redis.internal"].Meta[server.MetaListenPort] == "6380"
	})

	// Service removal (dns.internal), in a second file alongside.
	e.write("app.hcl", strings.Replace(fmt.Sprintf(appStack, 6380),
		"service \"dns.internal\" {\n    protocol    = \"udp\"\n    listen_port = 53\n    timeout     = \"30s\"\n  }\n", "", 1))
	e.write("other.hcl", "stack \"other\" {\n  service \"pg.other\" {\n    protocol = \"tcp\"\n    listen_port = 5432\n    timeout = 90\n  }\n}\n")
	sub.waitTable(t, "tcp/5432=pg.other:90 tcp/6380=redis.internal:0", 5*time.Second)
	e.waitCatalog("dns removed", func(m map[string]*api.AgentService) bool {
		return m["dns.internal"] == nil && m["pg.other"] != nil
	})

	// HTTP API agrees with the stream.
	var table []server.Mapping
	h := e.getJSON("/v1/port-mappings", &table)
	if len(table) != 2 || table[0].Service != "pg.other" || table[0].IdleTimeoutSecs != 90 || h.Get(server.IndexHeader) == "" {
		t.Errorf("/v1/port-mappings = %+v (index %q)", table, h.Get(server.IndexHeader))
	}
	var stacks []struct {
		Name     string `json:"name"`
		Services []struct {
			Service     string  `json:"service"`
			TimeoutSecs *uint64 `json:"timeout_secs"`
		} `json:"services"`
	}
	e.getJSON("/v1/stacks", &stacks)
	if len(stacks) != 2 || stacks[0].Name != "my-app" || len(stacks[0].Services) != 3 || stacks[1].Name != "other" {
		t.Errorf("/v1/stacks = %+v", stacks)
	}

	// File removal.
	e.remove("other.hcl")
	sub.waitTable(t, "tcp/6380=redis.internal:0", 5*time.Second)
	e.waitCatalog("pg removed", func(m map[string]*api.AgentService) bool { return m["pg.other"] == nil })
	e.remove("app.hcl")
	sub.waitTable(t, "", 5*time.Second)
	e.waitCatalog("all removed", func(m map[string]*api.AgentService) bool { return len(m) == 0 })

	// Versions only grow, and no table was sent twice in a row.
	bundles := sub.all()
	for i := 1; i < len(bundles); i++ {
		if bundles[i].Version <= bundles[i-1].Version {
			t.Errorf("version went from %d to %d", bundles[i-1].Version, bundles[i].Version)
		}
		if render(bundles[i]) == render(bundles[i-1]) {
			t.Errorf("identical table re-sent at version %d", bundles[i].Version)
		}
	}
}

// A rejected edit changes nothing anywhere, and the event carries file:line:col.
func TestStacks_RejectedEditChangesNothing(t *testing.T) {
	e := newStackEnv(t, nil, map[string]string{"app.hcl": fmt.Sprintf(appStack, 6379)})
	sub := e.subscribe()
	good := "tcp/6379=redis.internal:0 udp/53=dns.internal:30"
	sub.waitTable(t, good, 20*time.Second)
	e.waitCatalog("definitions", func(m map[string]*api.AgentService) bool { return len(m) == 4 })
	before := e.definitions()

	tests := []struct {
		name     string
		file     string
		src      string
		position string
	}{
		{"port conflict in another file", "conflict.hcl",
			"stack \"b\" {\n  service \"redis.b\" {\n    protocol = \"tcp\"\n    listen_port = 6379\n    timeout = 1\n  }\n}\n",
			"conflict.hcl:2:3"},
		{"syntax error", "app.hcl", fmt.Sprintf(appStack, 6390)[:120], "app.hcl:"},
		{"reserved port", "app.hcl", fmt.Sprintf(appStack, 4700), "app.hcl:2:3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			after := e.events.Index()
			sent := len(sub.all())
			e.write(tc.file, tc.src)
			ev := e.waitEvent(events.ConfigReloadRejected, after)
			if !strings.Contains(ev.Message, tc.position) || !strings.Contains(ev.Fields["diagnostics"], tc.position) {
				t.Errorf("event lacks %q: message %q diagnostics %q", tc.position, ev.Message, ev.Fields["diagnostics"])
			}
			// Give a wrong implementation time to push or write something.
			time.Sleep(500 * time.Millisecond)
			for name, d := range e.definitions() {
				if before[name] == nil || d.ModifyIndex != before[name].ModifyIndex {
					t.Errorf("catalog changed: %s", name)
				}
			}
			if b := sub.all(); render(b[len(b)-1]) != good || len(b) != sent {
				t.Errorf("subscriber got %d new tables, last %q", len(b)-sent, render(b[len(b)-1]))
			}
			if tc.file == "conflict.hcl" {
				e.remove(tc.file)
			} else {
				e.write("app.hcl", fmt.Sprintf(appStack, 6379))
			}
			e.waitEvent(events.ConfigReloaded, after)
		})
	}
}

// Many writes in a burst: the last one always wins (upstream's debounce could drop it).
func TestStacks_DebounceKeepsLastWrite(t *testing.T) {
	e := newStackEnv(t, nil, nil)
	sub := e.subscribe()
	sub.waitTable(t, "", 20*time.Second)
	for port := 7000; port < 7030; port++ {
		e.write("app.hcl", fmt.Sprintf(appStack, port))
		if port%7 == 0 {
			time.Sleep(60 * time.Millisecond) // some writes land just after a debounce fired
		}
	}
	sub.waitTable(t, "tcp/7029=redis.internal:0 udp/53=dns.internal:30", 10*time.Second)
}

// A definition registered from elsewhere with a taken port is not published; the oldest wins
// and a port_mapping_conflict event says why.
func TestStacks_ForeignDefinitionConflict(t *testing.T) {
	e := newStackEnv(t, nil, map[string]string{"app.hcl": fmt.Sprintf(appStack, 6379)})
	sub := e.subscribe()
	good := "tcp/6379=redis.internal:0 udp/53=dns.internal:30"
	sub.waitTable(t, good, 20*time.Second)
	after := e.events.Index()
	_, err := e.client.Catalog().Register(&api.CatalogRegistration{Node: "elsewhere", Address: "10.0.0.1",
		Service: &api.AgentService{ID: "intruder", Service: "intruder.other", Tags: []string{server.DefinitionTag},
			Meta: map[string]string{server.MetaStack: "other", server.MetaProtocol: "tcp", server.MetaListenPort: "6379", server.MetaTimeout: "10"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := e.waitEvent(events.PortMappingConflict, after)
	if ev.Fields["service"] != "intruder.other" || ev.Fields["winner_service"] != "redis.internal" {
		t.Errorf("conflict event %+v", ev)
	}
	// A non-conflicting foreign definition is published (Consul is the source of truth).
	_, err = e.client.Catalog().Register(&api.CatalogRegistration{Node: "elsewhere", Address: "10.0.0.1",
		Service: &api.AgentService{ID: "fine", Service: "fine.other", Tags: []string{server.DefinitionTag},
			Meta: map[string]string{server.MetaStack: "other", server.MetaProtocol: "tcp", server.MetaListenPort: "6390", server.MetaTimeout: "10"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub.waitTable(t, "tcp/6379=redis.internal:0 tcp/6390=fine.other:10 udp/53=dns.internal:30", 5*time.Second)
	// The mirror never touches what it did not create.
	time.Sleep(300 * time.Millisecond)
	if svcs, _, err := e.client.Catalog().Service("intruder.other", "", nil); err != nil || len(svcs) != 1 {
		t.Errorf("foreign definition touched: %v %v", svcs, err)
	}
}

// Consul stopped and restarted under a connected subscriber: nothing is pushed during the outage
// (no empty or partial table), and a change made after Consul returns arrives.
func TestStacks_ConsulRestart(t *testing.T) {
	dataDir := t.TempDir()
	// A persistent agent: a production Consul keeps its catalog across a restart (dev mode
	// would come back empty, which is a different story: state loss).
	c := consultest.StartWith(t, consultest.Options{DataDir: dataDir, Persistent: true})
	port := strings.Split(c.HTTPAddr, ":")[1]
	e := newStackEnv(t, c, map[string]string{"app.hcl": fmt.Sprintf(appStack, 6379)})
	sub := e.subscribe()
	good := "tcp/6379=redis.internal:0 udp/53=dns.internal:30"
	sub.waitTable(t, good, 20*time.Second)
	e.waitCatalog("definitions", func(m map[string]*api.AgentService) bool { return len(m) == 4 })

	c.Stop()
	// During the outage, an edit is accepted locally but cannot reach Consul or subscribers.
	time.Sleep(2 * time.Second)
	var httpPort int
	fmt.Sscan(port, &httpPort)
	consultest.StartWith(t, consultest.Options{DataDir: dataDir, HTTPPort: httpPort, Persistent: true})
	e.write("app.hcl", fmt.Sprintf(appStack, 6400))
	sub.waitTable(t, "tcp/6400=redis.internal:0 udp/53=dns.internal:30", 60*time.Second)
	seenGood := false
	for _, b := range sub.all() {
		// Before the mirror's first write a fresh Consul truly has no definitions.
		if seenGood = seenGood || render(b) == good; !seenGood {
			continue
		}
		if r := render(b); r != good && r != "tcp/6400=redis.internal:0 udp/53=dns.internal:30" {
			t.Errorf("version %d pushed a table that was never configured: %q", b.Version, r)
		}
	}
}

// An invalid stacks directory stops the server from starting, with file:line:col.
func TestStacks_InvalidAtStart(t *testing.T) {
	c := consultest.Start(t)
	dir := t.TempDir()
	e := &stackEnv{t: t, dir: dir}
	e.write("bad.hcl", "stack \"a\" {\n  service \"x\" {\n    protocol = \"tcp\"\n  }\n}\n")
	cfg := config.Default()
	cfg.Server.Enabled, cfg.Server.StacksDir = true, dir
	_, err := server.New(server.Config{Agent: cfg, Consul: c.Client(t), Events: events.New(10, nil), Logger: hclog.NewNullLogger()})
	if err == nil || !strings.Contains(err.Error(), "bad.hcl:2:3") {
		t.Fatalf("err = %v", err)
	}
}

// GET /v1/port-mappings blocks until the table changes.
func TestStacks_HTTPBlockingQuery(t *testing.T) {
	e := newStackEnv(t, nil, map[string]string{"app.hcl": fmt.Sprintf(appStack, 6379)})
	var table []server.Mapping
	var h http.Header
	deadline := time.Now().Add(20 * time.Second)
	for len(table) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("port table never had 2 entries")
		}
		resp, err := http.Get(e.http.URL + "/v1/port-mappings")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable { // not read from Consul yet
			time.Sleep(20 * time.Millisecond)
			continue
		}
		h = e.getJSON("/v1/port-mappings", &table)
	}
	idx := h.Get(server.IndexHeader)
	done := make(chan []server.Mapping, 1)
	go func() {
		var got []server.Mapping
		e.getJSON("/v1/port-mappings?index="+idx+"&wait=30s", &got)
		done <- got
	}()
	select {
	case <-done:
		t.Fatal("blocking query returned without a change")
	case <-time.After(300 * time.Millisecond):
	}
	e.write("app.hcl", fmt.Sprintf(appStack, 6500))
	select {
	case got := <-done:
		if len(got) != 2 || got[0].ListenPort != 6500 {
			t.Errorf("got %+v", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking query did not return after a change")
	}
	// A short wait returns the current table when nothing changes.
	start := time.Now()
	var same []server.Mapping
	h = e.getJSON("/v1/port-mappings?index=1000000&wait=200ms", &same)
	if time.Since(start) < 200*time.Millisecond || len(same) != 2 {
		t.Errorf("wait not honoured: %v %+v", time.Since(start), same)
	}
}

// A Consul that comes back without its data (a -dev agent) looks like "every definition was
// deleted" until the leader re-registers them: subscribers must not see that intermediate empty
// or partial table.
func TestStacks_ConsulLosesItsData(t *testing.T) {
	c := consultest.Start(t) // dev mode: the catalog lives in memory
	e := newStackEnv(t, c, map[string]string{"app.hcl": fmt.Sprintf(appStack, 6379)})
	sub := e.subscribe()
	good := "tcp/6379=redis.internal:0 udp/53=dns.internal:30"
	sub.waitTable(t, good, 20*time.Second)
	e.waitCatalog("definitions", func(m map[string]*api.AgentService) bool { return len(m) == 4 })
	sent := len(sub.all())

	c.Stop()
	var httpPort int
	fmt.Sscan(strings.Split(c.HTTPAddr, ":")[1], &httpPort)
	time.Sleep(time.Second)
	before := e.events.Index()
	consultest.StartWith(t, consultest.Options{HTTPPort: httpPort})
	// The lock went with the data: the server takes it again on the new agent, which proves
	// this Consul came back empty (and the mirror re-registers everything).
	e.waitEvent(events.LeadershipAcquired, before)
	e.waitCatalog("definitions re-registered by the leader", func(m map[string]*api.AgentService) bool { return len(m) == 4 })
	e.write("app.hcl", fmt.Sprintf(appStack, 6401))
	sub.waitTable(t, "tcp/6401=redis.internal:0 udp/53=dns.internal:30", 30*time.Second)
	for _, b := range sub.all()[sent:] {
		if r := render(b); r != good && r != "tcp/6401=redis.internal:0 udp/53=dns.internal:30" {
			t.Errorf("version %d pushed an intermediate table: %q", b.Version, r)
		}
	}
}

// Reload (SIGHUP) re-reads the directory; pointing stacks_dir elsewhere moves the watch too; a
// rejected set is returned as an error and changes nothing.
func TestStacks_ReloadAndNewDirectory(t *testing.T) {
	e := newStackEnv(t, nil, map[string]string{"app.hcl": fmt.Sprintf(appStack, 6379)})
	sub := e.subscribe()
	sub.waitTable(t, "tcp/6379=redis.internal:0 udp/53=dns.internal:30", 20*time.Second)

	newDir := t.TempDir()
	other := &stackEnv{t: t, dir: newDir}
	other.write("other.hcl", "stack \"other\" {\n  service \"pg.other\" {\n    protocol = \"tcp\"\n    listen_port = 5432\n    timeout = 90\n  }\n}\n")
	cfg := config.Default()
	cfg.Server.Enabled, cfg.Server.StacksDir, cfg.Server.ReloadDebounce = true, newDir, 50*time.Millisecond
	if err := e.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	sub.waitTable(t, "tcp/5432=pg.other:90", 5*time.Second)

	// The watcher follows the new directory, not the old one.
	e.write("app.hcl", fmt.Sprintf(appStack, 6390))
	other.write("other.hcl", "stack \"other\" {\n  service \"pg.other\" {\n    protocol = \"tcp\"\n    listen_port = 5433\n    timeout = 90\n  }\n}\n")
	sub.waitTable(t, "tcp/5433=pg.other:90", 5*time.Second)

	// A rejected set on SIGHUP: an error, nothing changes.
	other.write("bad.hcl", "stack \"bad\" {\n  oops\n}\n")
	err := e.srv.Reload(cfg)
	if !errors.Is(err, server.ErrStacksRejected) || !strings.Contains(err.Error(), "bad.hcl:2:3") {
		t.Fatalf("Reload = %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if b := sub.all(); render(b[len(b)-1]) != "tcp/5433=pg.other:90" {
		t.Errorf("table changed after a rejected reload: %q", render(b[len(b)-1]))
	}
}
