package server

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/config"
)

// Consul's answers are input the servers do not control: definitions can be registered by hand
// (or by another cluster) on any node, replicas by anything that registers services. These
// fuzz targets feed the functions that turn those answers into definitions, the port table and
// replica sets with arbitrary JSON (null entries, missing nodes, odd meta, tags and ports): they
// must never panic, and whatever they accept must be valid.

// checkResolved asserts what every server publishes: definitions with a name, a known protocol
// and a port in range; a port table of reachable tcp/udp services, one entry per
// (protocol, port), sorted, each naming a published definition, then the reachable http
// services sorted by name.
func checkResolved(t *testing.T, view catalogView, defs map[string]Definition, table []Mapping) {
	t.Helper()
	for _, d := range view.defs {
		if d.Service == "" {
			t.Fatalf("accepted a definition without a name: %+v", d)
		}
		switch d.Protocol {
		case config.ProtocolHTTP, config.ProtocolTCP, config.ProtocolUDP:
		default:
			t.Fatalf("accepted protocol %q: %+v", d.Protocol, d)
		}
		if d.ListenPort < 0 || d.ListenPort > 65535 {
			t.Fatalf("accepted listen port %d: %+v", d.ListenPort, d)
		}
		if d.Timeout < 0 || (!d.EntryPoint && d.Timeout != 0) {
			t.Fatalf("accepted timeout %v (entry point %v)", d.Timeout, d.EntryPoint)
		}
	}
	type key struct {
		proto string
		port  int
	}
	ports := portsOnly(table)
	for i, m := range table[len(ports):] {
		if m.Protocol != config.ProtocolHTTP || m.ListenPort != 0 || !defs[m.Service].EntryPoint {
			t.Fatalf("http part of the table holds %+v", m)
		}
		if i > 0 && table[len(ports)+i-1].Service >= m.Service {
			t.Fatalf("http services not sorted: %+v", table)
		}
	}
	table = ports
	seen := map[key]bool{}
	for i, m := range table {
		if m.Protocol != config.ProtocolTCP && m.Protocol != config.ProtocolUDP {
			t.Fatalf("port table entry with protocol %q: %+v", m.Protocol, m)
		}
		if m.ListenPort < 1 || m.ListenPort > 65535 {
			t.Fatalf("port table entry with port %d: %+v", m.ListenPort, m)
		}
		k := key{m.Protocol, m.ListenPort}
		if seen[k] {
			t.Fatalf("duplicate (protocol, port) %v in the port table %+v", k, table)
		}
		seen[k] = true
		if i > 0 && (table[i-1].Protocol > m.Protocol || table[i-1].Protocol == m.Protocol && table[i-1].ListenPort >= m.ListenPort) {
			t.Fatalf("port table not sorted: %+v", table)
		}
		d, ok := defs[m.Service]
		if !ok || d.Protocol != m.Protocol || d.ListenPort != m.ListenPort || !d.EntryPoint ||
			m.IdleTimeoutSecs != uint64(d.Timeout/time.Second) {
			t.Fatalf("port table entry %+v does not match its definition %+v (%v)", m, d, ok)
		}
	}
	for name, d := range defs {
		if name != d.Service {
			t.Fatalf("definition %+v published under %q", d, name)
		}
		if inPortTable(d) && !seen[key{d.Protocol, d.ListenPort}] {
			t.Fatalf("published definition %+v has no port table entry", d)
		}
		// What the mirror would write for it reads back the same.
		back, err := definitionFromCatalog(&api.CatalogService{ServiceName: d.Service, CreateIndex: d.CreateIndex,
			ServiceMeta: definitionMeta(config.StackService{Stack: d.Stack, Name: d.Service, Protocol: d.Protocol,
				ListenPort: d.ListenPort, EntryPoint: d.EntryPoint, Timeout: d.Timeout})})
		if err != nil || !back.Equal(d) {
			t.Fatalf("definition %+v reads back as %+v, %v", d, back, err)
		}
	}
}

// resolveBothWays resolves the definitions in the answer's order and reversed: the result must
// not depend on the order (every server must publish the same table).
func resolveBothWays(t *testing.T, view catalogView) (map[string]Definition, []Mapping) {
	t.Helper()
	defs, table, conflicts := resolveDefinitions(view.defs)
	rev := slices.Clone(view.defs)
	slices.Reverse(rev)
	defs2, table2, conflicts2 := resolveDefinitions(rev)
	if !mapsEqual(defs, defs2) || !slices.Equal(table, table2) || len(conflicts) != len(conflicts2) {
		t.Fatalf("the answer's order changed the result:\n%+v\n%+v", table, table2)
	}
	for _, c := range conflicts {
		if c.Loser.Equal(c.Winner) {
			t.Fatalf("a definition conflicts with itself: %+v", c)
		}
	}
	return defs, table
}

func mapsEqual(a, b map[string]Definition) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !w.Equal(v) {
			return false
		}
	}
	return true
}

// FuzzDefinitionsFromConsul: the definitions node's answer (/v1/catalog/node-services) and the
// foreign definitions (/v1/catalog/service/<name>), as JSON.
func FuzzDefinitionsFromConsul(f *testing.F) {
	f.Add([]byte(`{"Node":{"Node":"nullnet-stacks","Meta":{"nullnet-count":"2"}},"Services":[`+
		`{"ID":"a/web","Service":"web","Tags":["nullnet-definition"],"Meta":{"nullnet-stack":"a","nullnet-protocol":"http","nullnet-timeout":"30"},"CreateIndex":5},`+
		`{"ID":"a/db","Service":"db","Tags":["nullnet-definition"],"Meta":{"nullnet-stack":"a","nullnet-protocol":"tcp","nullnet-listen-port":"5432","nullnet-timeout":"0"},"CreateIndex":5}]}`),
		[]byte(`[{"Node":"n1","ServiceID":"x","ServiceName":"db2","ServiceTags":["nullnet-definition"],"ServiceMeta":{"nullnet-stack":"b","nullnet-protocol":"tcp","nullnet-listen-port":"5432","nullnet-timeout":"9"},"CreateIndex":7}]`))
	f.Add([]byte(`{"Node":null,"Services":[null]}`), []byte(`[null,{"ServiceName":""}]`))
	f.Add([]byte(`{"Node":{"Meta":{"nullnet-digest":"x","nullnet-count":"-7"}},"Services":[{"ID":"s","Service":"s","Tags":["nullnet-definition"],"Meta":{"nullnet-protocol":"udp","nullnet-listen-port":"65536","nullnet-timeout":"-1"}}]}`),
		[]byte(`[{"ServiceName":"u","ServiceMeta":{"nullnet-protocol":"UDP","nullnet-listen-port":"+53","nullnet-timeout":"4294967295"}},{"ServiceName":"u","ServiceMeta":{"nullnet-protocol":"udp","nullnet-listen-port":"053","nullnet-timeout":"1"}}]`))
	f.Fuzz(func(t *testing.T, nodeJSON, foreignJSON []byte) {
		var list *api.CatalogNodeServiceList
		_ = json.Unmarshal(nodeJSON, &list)
		var foreign []*api.CatalogService
		_ = json.Unmarshal(foreignJSON, &foreign)
		own := consul.NodeStateFrom(list, 1, DefinitionTag)
		view := definitionsView(own, foreign)
		if view.want < -1 {
			t.Fatalf("announced count %d", view.want)
		}
		defs, table := resolveBothWays(t, view)
		checkResolved(t, view, defs, table)
	})
}

// FuzzDefinitionMeta: one definition's meta, key by key, next to a fixed tcp/5432 one it may
// clash with.
func FuzzDefinitionMeta(f *testing.F) {
	f.Add("db", "a", "tcp", "5432", "10", true, uint64(3))
	f.Add("web", "", "", "", "", false, uint64(0))
	f.Add("x", "s", "udp", "0", "18446744073709551615", true, uint64(9))
	f.Add("", "s", "http", "80", "1", true, uint64(1))
	f.Fuzz(func(t *testing.T, name, stack, protocol, port, timeout string, withTimeout bool, index uint64) {
		meta := map[string]string{MetaStack: stack}
		if protocol != "" {
			meta[MetaProtocol] = protocol
		}
		if port != "" {
			meta[MetaListenPort] = port
		}
		if withTimeout {
			meta[MetaTimeout] = timeout
		}
		foreign := []*api.CatalogService{
			{Node: "n", ServiceID: name, ServiceName: name, ServiceTags: []string{DefinitionTag}, ServiceMeta: meta, CreateIndex: index},
			{Node: "n", ServiceID: "pg", ServiceName: "pg", ServiceTags: []string{DefinitionTag}, CreateIndex: 4,
				ServiceMeta: map[string]string{MetaStack: "b", MetaProtocol: "tcp", MetaListenPort: "5432", MetaTimeout: "60"}},
		}
		view := definitionsView(&consul.NodeState{}, foreign)
		if len(view.defs)+len(view.invalid) != 2 {
			t.Fatalf("%d definitions and %d invalid from 2 instances", len(view.defs), len(view.invalid))
		}
		defs, table := resolveBothWays(t, view)
		checkResolved(t, view, defs, table)
	})
}

// FuzzReplicasFromConsul: a service's health answer (/v1/health/service/<name>), the "nullnet"
// agents (/v1/catalog/service/nullnet) and every check (/v1/health/state/any), as JSON, through
// the replica watcher's bookkeeping to the candidates a session may use.
func FuzzReplicasFromConsul(f *testing.F) {
	f.Add([]byte(`[{"Node":{"Node":"c1","Address":"192.0.2.1"},"Service":{"ID":"web-1","Service":"web","Port":8080,"Meta":{"nullnet-node":"n1"}},"Checks":[{"Node":"c1","CheckID":"serfHealth","Status":"passing"},{"Node":"c1","CheckID":"web-1:port","ServiceID":"web-1","ServiceName":"web","Status":"passing"}]},`+
		`{"Node":{"Node":"c2","Address":"192.0.2.2"},"Service":{"ID":"web-2","Service":"web","Port":8080,"Address":"10.1.1.1"},"Checks":[{"Status":"critical"}]}]`),
		[]byte(`[{"Node":"c2","ServiceName":"nullnet","ServiceMeta":{"nullnet-node":"n2"}}]`),
		[]byte(`[{"Node":"c1","CheckID":"web-1:port","ServiceID":"web-1","ServiceName":"web","Status":"passing","ModifyIndex":3}]`))
	f.Add([]byte(`[null,{"Node":null},{"Service":null},{"Node":{},"Service":{"Port":0}},{"Node":{},"Service":{"Port":70000}},{"Node":{"Node":"c"},"Service":{"ID":"d","Port":1,"Tags":["nullnet-definition"]}},{"Node":{"Node":"c"},"Service":{"ID":"a","Port":-1}},{"Node":{"Node":"c"},"Service":{"ID":"a","Port":2},"Checks":[null]},{"Node":{"Node":"c"},"Service":{"ID":"a","Port":3}}]`),
		[]byte(`[null,{"Node":"","ServiceMeta":{"nullnet-node":"x"}}]`), []byte(`[null,{}]`))
	f.Fuzz(func(t *testing.T, entriesJSON, agentsJSON, checksJSON []byte) {
		var entries []*api.ServiceEntry
		_ = json.Unmarshal(entriesJSON, &entries)
		var agents []*api.CatalogService
		_ = json.Unmarshal(agentsJSON, &agents)
		var checks api.HealthChecks
		_ = json.Unmarshal(checksJSON, &checks)

		inst := replicaInstances(entries)
		ids := map[string]bool{}
		for i, in := range inst {
			if in.Port < 1 || in.Port > 65535 {
				t.Fatalf("replica with port %d: %+v", in.Port, in)
			}
			if ids[in.ID] {
				t.Fatalf("replica %q twice", in.ID)
			}
			ids[in.ID] = true
			if i > 0 && inst[i-1].ID > in.ID {
				t.Fatalf("replicas not sorted: %+v", inst)
			}
		}

		w := newReplicaWatcher(nil, hclog.NewNullLogger(), func(string) {}, func(error, int) {})
		w.nodes = agentNodes(agents)
		for c, n := range w.nodes {
			if c == "" || n == "" {
				t.Fatalf("agents map %q -> %q", c, n)
			}
		}
		s := &serviceReplicas{ready: make(chan struct{})}
		w.services["web"] = s
		w.setLocked("web", s, inst, 1)
		w.servicesChanged(servicesView{"web": {"a"}, agentsName: nil}, 1)
		w.checksChanged(checks, 1)
		v := w.view("web")
		if !v.known || len(v.all) != len(inst) {
			t.Fatalf("view: known %v, %d instances of %d", v.known, len(v.all), len(inst))
		}
		cands, why := v.candidates(func(node string) bool { return node != "" })
		if len(cands) == 0 && why == "" {
			t.Fatal("no candidate and no reason")
		}
		for _, r := range cands {
			if r.Node == "" || r.Port < 1 || r.Port > 65535 || v.status(r) != "" {
				t.Fatalf("candidate %+v (status %q)", r, v.status(r))
			}
		}
	})
}
