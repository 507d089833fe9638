package proxy

import (
	"github.com/nullnet/nullnet/agent/servicepolicy"
	pb "github.com/nullnet/nullnet/proto"
)

// The services' policies (allow-lists, limits, PROXY protocol, HTTP settings) ride in the port
// table (PortMapping.policy, PortMappingBundle.http_services). applyBundle swaps one immutable
// index per bundle before it reconciles the listeners, so a listener opened for a bundle sees
// that bundle's policies, and the hot path reads them with one atomic load and a map lookup.
// A change of policy alone changes no listener: the index moves, nothing is rebound, and live
// connections keep running (each use reads the policy when it needs it).

// servicePolicy returns the service's policy from the latest bundle, nil when it has none.
func (p *Proxy) servicePolicy(service string) *pb.ServicePolicy {
	return p.policies.Load().Policy(service)
}

// httpService returns the reachable http service a Host header names (port and trailing dot
// stripped, lowercased as the router does).
func (p *Proxy) httpService(host string) (*pb.PortMapping, bool) {
	return p.policies.Load().HTTPService(serviceFromHost(host))
}

// setPolicies installs a bundle's index.
func (p *Proxy) setPolicies(ix *servicepolicy.Index) {
	old := p.policies.Swap(ix)
	if old.Len() != ix.Len() || ix.Len() > 0 {
		p.logger.Debug("service policies updated", "version", ix.Version(), "with_policy", ix.Len())
	}
}
