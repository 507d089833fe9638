package consul

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestDigest(t *testing.T) {
	a := CatalogService{ID: "a", Name: "a", Tags: []string{"t2", "t1"}, Meta: map[string]string{"k": "v", "x": "y"}}
	b := CatalogService{ID: "b", Name: "b", Tags: []string{"t1"}}
	base := Digest([]CatalogService{a, b})
	cases := []struct {
		name string
		set  []CatalogService
		same bool
	}{
		{"order of services", []CatalogService{b, a}, true},
		{"order and duplicates of tags", []CatalogService{{ID: "a", Name: "a", Tags: []string{"t1", "t2", "t1"}, Meta: a.Meta}, b}, true},
		{"nil and empty meta", []CatalogService{a, {ID: "b", Name: "b", Tags: []string{"t1"}, Meta: map[string]string{}}}, true},
		{"one service less", []CatalogService{a}, false},
		{"a meta value", []CatalogService{{ID: "a", Name: "a", Tags: a.Tags, Meta: map[string]string{"k": "w", "x": "y"}}, b}, false},
		{"a name", []CatalogService{{ID: "a", Name: "a2", Tags: a.Tags, Meta: a.Meta}, b}, false},
		{"a tag", []CatalogService{{ID: "a", Name: "a", Tags: []string{"t1"}, Meta: a.Meta}, b}, false},
		// Length prefixes: moving bytes between fields changes the digest.
		{"field boundaries", []CatalogService{{ID: "a", Name: "a", Tags: a.Tags, Meta: map[string]string{"kv": "", "x": "y"}}, b}, false},
	}
	for _, c := range cases {
		if got := Digest(c.set) == base; got != c.same {
			t.Errorf("%s: same digest = %v, want %v", c.name, got, c.same)
		}
	}
	if Digest(nil) != Digest([]CatalogService{}) {
		t.Error("nil and empty sets differ")
	}
}

func TestNodeStateComplete(t *testing.T) {
	svc := func(id string) *api.AgentService {
		return &api.AgentService{ID: id, Service: id, Tags: []string{"tag"}, Meta: map[string]string{"m": id}}
	}
	want := []CatalogService{{ID: "a", Name: "a", Tags: []string{"tag"}, Meta: map[string]string{"m": "a"}},
		{ID: "b", Name: "b", Tags: []string{"tag"}, Meta: map[string]string{"m": "b"}}}
	announced := map[string]string{MetaDigest: Digest(want), MetaCount: "2"}
	cases := []struct {
		name     string
		meta     map[string]string
		services map[string]*api.AgentService
		complete bool
	}{
		{"announced set present", announced, map[string]*api.AgentService{"a": svc("a"), "b": svc("b")}, true},
		{"halfway", announced, map[string]*api.AgentService{"a": svc("a")}, false},
		{"an old service still there", announced, map[string]*api.AgentService{"a": svc("a"), "b": svc("b"), "c": svc("c")}, false},
		{"no announcement", map[string]string{}, map[string]*api.AgentService{"a": svc("a")}, true},
		{"empty node announced empty", map[string]string{MetaDigest: Digest(nil), MetaCount: "0"}, map[string]*api.AgentService{}, true},
	}
	for _, c := range cases {
		st := &NodeState{Exists: true, Meta: c.meta, Services: c.services}
		if got := st.Complete(); got != c.complete {
			t.Errorf("%s: Complete() = %v, want %v", c.name, got, c.complete)
		}
	}
	if n := (&NodeState{Meta: announced}).Expected(); n != 2 {
		t.Errorf("Expected() = %d", n)
	}
	if n := (&NodeState{Meta: map[string]string{MetaCount: "x"}}).Expected(); n != -1 {
		t.Errorf("Expected() of a bad count = %d", n)
	}
}

func TestQueryError(t *testing.T) {
	cases := []struct {
		err error
		acl bool
	}{
		{api.StatusError{Code: 403, Body: "Permission denied"}, true},
		{fmt.Errorf("Unexpected response code: 403 (ACL not found)"), true},
		{api.StatusError{Code: 500, Body: "rpc error"}, false},
		{errors.New("connection refused"), false},
	}
	for _, c := range cases {
		err := QueryError("reading x", "node:read", c.err)
		var acl *ACLError
		if got := errors.As(err, &acl); got != c.acl {
			t.Errorf("%v: ACL error = %v, want %v", c.err, got, c.acl)
		}
		if !errors.Is(err, c.err) && !c.acl {
			t.Errorf("%v: not wrapped", c.err)
		}
	}
	if err := CheckFiltered(&api.QueryMeta{ResultsFilteredByACLs: true}, "q", "r"); err == nil {
		t.Error("a filtered answer passed")
	}
	if err := CheckFiltered(&api.QueryMeta{}, "q", "r"); err != nil {
		t.Error(err)
	}
}
