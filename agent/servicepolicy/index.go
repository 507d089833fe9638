package servicepolicy

import (
	"iter"
	"maps"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// Index is a proxy's view of one port-table bundle's policies, by service. It is built once per
// bundle and never modified, so readers on the hot path share it without locks (the proxy swaps
// it through an atomic pointer). The zero/nil Index knows nothing.
type Index struct {
	version  uint64
	policies map[string]*pb.ServicePolicy // services (tcp, udp, tls, http) that have one
	http     map[string]*pb.PortMapping   // reachable http services, by name
}

// NewIndex indexes a bundle. Entries with names that are not valid service names are skipped:
// the server validated them, so such a name is a bug or a hostile peer.
func NewIndex(b *pb.PortMappingBundle) *Index {
	ix := &Index{version: b.GetVersion(), policies: map[string]*pb.ServicePolicy{},
		http: make(map[string]*pb.PortMapping, len(b.GetHttpServices()))}
	for _, m := range b.GetMappings() {
		if p := m.GetPolicy(); p != nil && config.ValidServiceName(m.GetService()) {
			ix.policies[m.GetService()] = p
		}
	}
	for _, m := range b.GetHttpServices() {
		if m == nil || !config.ValidServiceName(m.GetService()) {
			continue
		}
		ix.http[m.GetService()] = m
		if p := m.GetPolicy(); p != nil {
			ix.policies[m.GetService()] = p
		}
	}
	return ix
}

// Version is the bundle's version.
func (ix *Index) Version() uint64 {
	if ix == nil {
		return 0
	}
	return ix.version
}

// Policy returns a service's policy, nil when it has none (or is unknown).
func (ix *Index) Policy(service string) *pb.ServicePolicy {
	if ix == nil {
		return nil
	}
	return ix.policies[service]
}

// All yields each service that has a policy, with its policy (in no particular order). The
// proxy compiles its per-service state (client rules, path routes) from it, so every consumer
// reads the same policy for a service.
func (ix *Index) All() iter.Seq2[string, *pb.ServicePolicy] {
	if ix == nil {
		return func(func(string, *pb.ServicePolicy) bool) {}
	}
	return maps.All(ix.policies)
}

// HTTPService returns a reachable http service by name.
func (ix *Index) HTTPService(name string) (*pb.PortMapping, bool) {
	if ix == nil {
		return nil, false
	}
	m, ok := ix.http[name]
	return m, ok
}

// Len is the number of services with a policy.
func (ix *Index) Len() int {
	if ix == nil {
		return 0
	}
	return len(ix.policies)
}
