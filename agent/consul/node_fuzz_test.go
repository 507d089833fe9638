package consul

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/hashicorp/consul/api"
)

// FuzzNodeStateFrom: any answer of /v1/catalog/node-services (the mirror's node, as JSON: null
// entries, services without IDs or the tag, duplicate IDs, odd node meta) reads without a
// panic into a state whose services all carry the tag under their own ID; its digest does not
// depend on the answer's order; a state announcing its own digest is complete; and what the
// mirror would write for each owned service compares equal to it (no endless rewrites).
func FuzzNodeStateFrom(f *testing.F) {
	const tag = "nullnet-definition"
	f.Add([]byte(`{"Node":{"Node":"nullnet-stacks","Meta":{"nullnet-digest":"abc","nullnet-count":"2"}},"Services":[` +
		`{"ID":"a/web","Service":"web","Tags":["nullnet-definition","x"],"Meta":{"nullnet-stack":"a"}},` +
		`{"ID":"b/db","Service":"db","Tags":["nullnet-definition"]},{"ID":"other","Service":"o","Tags":["y"]}]}`))
	f.Add([]byte(`{"Node":null,"Services":[{"ID":"x","Tags":["nullnet-definition"]}]}`))
	f.Add([]byte(`{"Node":{"Meta":null},"Services":[null,{"ID":"","Tags":["nullnet-definition"]},{"ID":"d","Tags":["nullnet-definition","nullnet-definition"]},{"ID":"d","Service":"second","Tags":["nullnet-definition"]}]}`))
	f.Add([]byte(`{"Node":{"Meta":{"nullnet-count":"-3"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var list *api.CatalogNodeServiceList
		_ = json.Unmarshal(data, &list)
		st := NodeStateFrom(list, 7, tag)
		if st.Index != 7 || st.Services == nil || st.Meta == nil {
			t.Fatalf("state %+v", st)
		}
		if st.Exists != (list != nil && list.Node != nil) {
			t.Fatalf("Exists %v for node %v", st.Exists, list != nil && list.Node != nil)
		}
		for id, s := range st.Services {
			if s == nil || s.ID != id || id == "" || !slices.Contains(s.Tags, tag) {
				t.Fatalf("service under %q: %+v", id, s)
			}
		}
		if n := st.Expected(); n < -1 {
			t.Fatalf("Expected() = %d", n)
		}
		_ = st.Complete()

		owned := st.Owned()
		if len(owned) != len(st.Services) {
			t.Fatalf("%d owned of %d services", len(owned), len(st.Services))
		}
		d := Digest(owned)
		rev := slices.Clone(owned)
		slices.Reverse(rev)
		if Digest(rev) != d {
			t.Fatal("the digest depends on the order of the services")
		}
		announced := &NodeState{Meta: map[string]string{MetaDigest: d}, Services: st.Services}
		if !announced.Complete() {
			t.Fatal("a node holding exactly the announced set reads as incomplete")
		}
		for _, o := range owned {
			have := st.Services[o.ID]
			want := CatalogService{ID: o.ID, Name: o.Name, Tags: slices.Sorted(slices.Values(o.Tags)), Meta: maps.Clone(o.Meta)}
			if have.Port == 0 && have.Address == "" && !equalService(want, have) {
				t.Fatalf("the mirror's own service %+v does not compare equal to %+v", want, have)
			}
		}
	})
}
