package certs

import (
	"crypto/tls"
	"testing"
)

func TestSnapshotLookup(t *testing.T) {
	exact, wild := &tls.Certificate{}, &tls.Certificate{}
	s := &Snapshot{ByName: map[string]*tls.Certificate{"a.example.com": exact, "*.example.com": wild}}
	cases := []struct {
		name string
		want *tls.Certificate
	}{
		{"a.example.com", exact},
		{"A.Example.COM.", exact},
		{"b.example.com", wild},
		{"x.b.example.com", nil},
		{"example.com", nil},
		{"", nil},
		{"other.org", nil},
	}
	for _, tc := range cases {
		got, ok := s.Lookup(tc.name)
		if got != tc.want || ok != (tc.want != nil) {
			t.Errorf("Lookup(%q) = %p, %v; want %p", tc.name, got, ok, tc.want)
		}
	}
	var empty Set
	if _, ok := empty.Current().Lookup("a.example.com"); ok {
		t.Fatal("empty set found a certificate")
	}
}
