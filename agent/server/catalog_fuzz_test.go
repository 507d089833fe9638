package server

import (
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul"
)

// FuzzDefinitionsAnswer feeds arbitrary catalog answers (meta values, tags, node meta with an
// announcement) through the reading of definitions and the port table: a clear error per
// instance or a table, never a panic.
func FuzzDefinitionsAnswer(f *testing.F) {
	f.Add("redis", "tcp", "6379", "0", "s", "", "", "")
	f.Add("dns", "udp", "53", "30", "s", "nullnet-digest", "abc", "2")
	f.Add("web", "http", "", "300", "s", "", "", "")
	f.Add("x", "sctp", "-1", "1e9", "", "nullnet-count", "x", "")
	f.Fuzz(func(t *testing.T, name, proto, port, timeout, stack, metaKey, metaVal, count string) {
		meta := map[string]string{MetaProtocol: proto, MetaListenPort: port, MetaTimeout: timeout, MetaStack: stack}
		own := &consul.NodeState{Exists: true, Meta: map[string]string{metaKey: metaVal, consul.MetaCount: count},
			Services: map[string]*api.AgentService{
				"a": {ID: "a", Service: name, Tags: []string{DefinitionTag}, Meta: meta},
				"b": {ID: "b", Service: name + "2", Tags: []string{DefinitionTag, name}, Meta: meta, CreateIndex: 1},
			}}
		foreign := []*api.CatalogService{{Node: "n", ServiceID: "c", ServiceName: name, ServiceMeta: meta}}
		view := definitionsView(own, foreign)
		if len(view.defs)+len(view.invalid) != 3 {
			t.Fatalf("%d definitions and %d invalid of 3 instances", len(view.defs), len(view.invalid))
		}
		defs, table, _ := resolveDefinitions(view.defs)
		if len(table) > len(defs) {
			t.Fatalf("table of %d for %d definitions", len(table), len(defs))
		}
		_ = own.Expected()
	})
}
