package server

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/config"
)

func TestJoinPolicies(t *testing.T) {
	good := config.ServicePolicy{CloseOnUnhealthy: true, Allow: []string{"10.0.0.0/8"}}
	goodJSON, goodDigest := servicepolicy.Encode(good)
	newer := config.ServicePolicy{MaxSessions: 5}
	newerJSON, newerDigest := servicepolicy.Encode(newer)
	bad := []byte("{not json")
	badDigest := servicepolicy.Digest(bad)
	doc := func(v []byte) policyDoc {
		d := policyDoc{digest: servicepolicy.Digest(v)}
		d.policy, d.err = servicepolicy.Decode(v)
		return d
	}
	def := func(svc, announced string) Definition {
		return Definition{Stack: "s", Service: svc, Protocol: "tcp", ListenPort: 1, EntryPoint: true, announced: announced}
	}
	type want struct {
		present bool
		digest  string
	}
	for _, tc := range []struct {
		name      string
		published []Definition // what the server published before
		kv        map[string]policyDoc
		defs      []Definition
		want      map[string]want
		pending   int
		invalid   int
	}{
		{name: "no policy needs no KV", defs: []Definition{def("a", "")}, want: map[string]want{"a": {true, ""}}},
		{name: "matching document", kv: map[string]policyDoc{servicepolicy.Key("s", "a"): doc(goodJSON)},
			defs: []Definition{def("a", goodDigest)}, want: map[string]want{"a": {true, goodDigest}}},
		{name: "KV not read yet, new service: left out, pending", defs: []Definition{def("a", goodDigest)},
			want: map[string]want{"a": {false, ""}}, pending: 1},
		{name: "KV lags a change: previous policy kept, pending",
			published: []Definition{{Stack: "s", Service: "a", Policy: good, PolicyDigest: goodDigest}},
			kv:        map[string]policyDoc{servicepolicy.Key("s", "a"): doc(goodJSON)},
			defs:      []Definition{def("a", newerDigest)}, want: map[string]want{"a": {true, goodDigest}}, pending: 1},
		{name: "KV ahead of the catalog: new document ignored until announced",
			kv:   map[string]policyDoc{servicepolicy.Key("s", "a"): doc(newerJSON)},
			defs: []Definition{def("a", "")}, want: map[string]want{"a": {true, ""}}},
		{name: "announced bad document, no previous: invalid, not pending",
			kv:   map[string]policyDoc{servicepolicy.Key("s", "a"): doc(bad)},
			defs: []Definition{def("a", badDigest)}, want: map[string]want{"a": {false, ""}}, invalid: 1},
		{name: "announced bad document: previous kept",
			published: []Definition{{Stack: "s", Service: "a", Policy: good, PolicyDigest: goodDigest}},
			kv:        map[string]policyDoc{servicepolicy.Key("s", "a"): doc(bad)},
			defs:      []Definition{def("a", badDigest)}, want: map[string]want{"a": {true, goodDigest}}},
		{name: "previous of another stack is not inherited",
			published: []Definition{{Stack: "other", Service: "a", Policy: good, PolicyDigest: goodDigest}},
			defs:      []Definition{def("a", goodDigest)}, want: map[string]want{"a": {false, ""}}, pending: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{logger: hclog.NewNullLogger(), defs: newDefinitionSet()}
			pub := map[string]Definition{}
			for _, d := range tc.published {
				pub[d.Service] = d
			}
			s.defs.Set(pub)
			st := &catalogState{kv: tc.kv}
			view := catalogView{defs: tc.defs, invalid: map[string]string{}, complete: true}
			s.joinPolicies(st, &view)
			got := map[string]Definition{}
			for _, d := range view.defs {
				got[d.Service] = d
			}
			for svc, w := range tc.want {
				d, ok := got[svc]
				if ok != w.present || d.PolicyDigest != w.digest {
					t.Errorf("%s: present %v digest %q, want %v %q", svc, ok, d.PolicyDigest, w.present, w.digest)
				}
				if ok && d.PolicyDigest != "" {
					if _, dg := servicepolicy.Encode(d.Policy); dg != d.PolicyDigest {
						t.Errorf("%s: policy does not match its digest", svc)
					}
				}
			}
			if view.policiesPending != tc.pending || view.complete != (tc.pending == 0) || len(view.invalid) != tc.invalid {
				t.Errorf("pending %d complete %v invalid %v", view.policiesPending, view.complete, view.invalid)
			}
		})
	}
}

func TestTableDiffNamesPolicyChange(t *testing.T) {
	p := config.ServicePolicy{CloseOnUnhealthy: true}
	_, d := servicepolicy.Encode(p)
	a := Mapping{Stack: "s", Service: "db", Protocol: "tcp", ListenPort: 5432}
	b := a
	b.Policy, b.PolicyDigest = &p, d
	h := Mapping{Stack: "s", Service: "www", Protocol: "http"}
	h2 := h
	h2.Policy, h2.PolicyDigest = &p, d
	if got := tableDiff([]Mapping{a, h}, []Mapping{b, h2}); got != "~policy:tcp/5432=db ~policy:http/www=www" {
		t.Fatalf("diff %q", got)
	}
	c := b
	c.IdleTimeoutSecs = 9
	if got := tableDiff([]Mapping{a}, []Mapping{c}); got != "~tcp/5432=db" {
		t.Fatalf("diff %q", got)
	}
	if got := tableDiff([]Mapping{a}, []Mapping{a, h}); got != "+http/www=www" {
		t.Fatalf("diff %q", got)
	}
}

func TestToProtoSplitsHTTPServices(t *testing.T) {
	p := config.ServicePolicy{HTTPSRedirect: true}
	_, d := servicepolicy.Encode(p)
	b := toProto(4, []Mapping{
		{Stack: "s", Service: "db", Protocol: "tcp", ListenPort: 5432, IdleTimeoutSecs: 30},
		{Stack: "s", Service: "www", Protocol: "http", IdleTimeoutSecs: 60, Policy: &p, PolicyDigest: d},
	})
	if len(b.GetMappings()) != 1 || len(b.GetHttpServices()) != 1 || b.GetMappings()[0].GetPolicy() != nil ||
		!b.GetHttpServices()[0].GetPolicy().GetHttpsRedirect() || b.GetHttpServices()[0].GetIdleTimeoutSecs() != 60 {
		t.Fatalf("bundle %v", b)
	}
}
