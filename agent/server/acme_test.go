package server

import (
	"slices"
	"testing"
)

func TestACMEDomainsOnlyReachableHTTP(t *testing.T) {
	old := definitionWantsACME
	t.Cleanup(func() { definitionWantsACME = old })
	want := map[string]bool{"a.example.com": true, "backend.example.com": true, "tcp.example.com": true}
	definitionWantsACME = func(d Definition) bool { return want[d.Service] }
	defs := []Definition{
		{Service: "a.example.com", Protocol: "http", EntryPoint: true},
		{Service: "b.example.com", Protocol: "http", EntryPoint: true},        // acme not asked
		{Service: "backend.example.com", Protocol: "http", EntryPoint: false}, // not reachable
		{Service: "tcp.example.com", Protocol: "tcp", EntryPoint: true, ListenPort: 99},
	}
	if got := acmeDomains(defs); !slices.Equal(got, []string{"a.example.com"}) {
		t.Fatalf("acmeDomains = %v", got)
	}
}
