package server

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// Mapping is one entry of the port table: a TCP, UDP or TLS port every proxy listens on (a port
// of tls services has one entry per service: the proxy routes by SNI among them), or a reachable
// http service (ListenPort 0), which the proxies route by Host header and which the table
// carries for its per-service settings (PortMappingBundle.http_services).
type Mapping struct {
	Stack           string `json:"stack"`
	Service         string `json:"service"`
	Protocol        string `json:"protocol"`
	ListenPort      int    `json:"listen_port"`
	IdleTimeoutSecs uint64 `json:"idle_timeout_secs"`
	// Policy is the service's edge settings (nil = none; shared, never modified), identified
	// by PolicyDigest: mappings compare by digest (same).
	Policy       *config.ServicePolicy `json:"policy,omitempty"`
	PolicyDigest string                `json:"-"`
}

// same compares two mappings, their policies by digest.
func (m Mapping) same(o Mapping) bool {
	return m.Stack == o.Stack && m.Service == o.Service && m.Protocol == o.Protocol && m.ListenPort == o.ListenPort &&
		m.IdleTimeoutSecs == o.IdleTimeoutSecs && m.PolicyDigest == o.PolicyDigest
}

// isPort reports whether the mapping is a listener (tcp, udp), not an http service.
func (m Mapping) isPort() bool { return m.ListenPort > 0 }

// Conflict is a definition that was not published because an older one holds its service name
// or its listen_port (in its port space, which only tls services share).
type Conflict struct {
	Loser  Definition
	Winner Definition
	// Port is true for a (protocol, listen_port) clash, false for a duplicate service name.
	Port bool
}

// Key identifies the conflict, so that it is reported once rather than on every catalog change.
func (c Conflict) Key() string {
	return fmt.Sprintf("%s/%s/%d|%s/%s/%d|%t", c.Loser.Stack, c.Loser.Service, c.Loser.CreateIndex,
		c.Winner.Stack, c.Winner.Service, c.Winner.CreateIndex, c.Port)
}

// String explains the conflict for logs and events.
func (c Conflict) String() string {
	if c.Port && c.Loser.Protocol != c.Winner.Protocol {
		return fmt.Sprintf("%s port %d of service %q (stack %q) is already held by %s service %q (stack %q), which was registered first; a tcp and a tls service cannot share a port; %q is not published",
			c.Loser.Protocol, c.Loser.ListenPort, c.Loser.Service, c.Loser.Stack, c.Winner.Protocol, c.Winner.Service, c.Winner.Stack, c.Loser.Service)
	}
	if c.Port {
		return fmt.Sprintf("%s port %d of service %q (stack %q) is already held by service %q (stack %q), which was registered first; %q is not published",
			c.Loser.Protocol, c.Loser.ListenPort, c.Loser.Service, c.Loser.Stack, c.Winner.Service, c.Winner.Stack, c.Loser.Service)
	}
	return fmt.Sprintf("service %q is defined twice (stacks %q and %q); the older definition (stack %q) wins",
		c.Loser.Service, c.Winner.Stack, c.Loser.Stack, c.Winner.Stack)
}

// resolveDefinitions turns every definition found in Consul into the published set and its port
// table. The result is the same on every server for the same catalog: definitions are taken
// oldest first (CreateIndex, then names), and a later one that repeats a service name or claims
// a taken listen_port is left out and returned as a conflict. tls services share their port with
// other tls services (config.SharesPort), never with a tcp service.
func resolveDefinitions(all []Definition) (map[string]Definition, []Mapping, []Conflict) {
	sorted := slices.Clone(all)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if a.CreateIndex != b.CreateIndex {
			return a.CreateIndex < b.CreateIndex
		}
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Stack != b.Stack {
			return a.Stack < b.Stack
		}
		// Only a hand-made catalog repeats a name in one stack at one index; the rest of the
		// fields still decide, so that the answer's order never does.
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		if a.ListenPort != b.ListenPort {
			return a.ListenPort < b.ListenPort
		}
		if a.EntryPoint != b.EntryPoint {
			return !a.EntryPoint
		}
		return a.Timeout < b.Timeout
	})
	type portKey struct {
		space string // config.PortSpace
		port  int
	}
	defs := map[string]Definition{}
	ports := map[portKey]Definition{}
	var conflicts []Conflict
	for _, d := range sorted {
		if w, dup := defs[d.Service]; dup {
			if !w.Equal(d) {
				conflicts = append(conflicts, Conflict{Loser: d, Winner: w})
			}
			continue
		}
		if inPortTable(d) {
			k := portKey{config.PortSpace(d.Protocol), d.ListenPort}
			if w, taken := ports[k]; taken && !config.SharesPort(w.Protocol, d.Protocol) {
				conflicts = append(conflicts, Conflict{Loser: d, Winner: w, Port: true})
				continue
			} else if !taken {
				ports[k] = d // the first holder decides what may join it
			}
		}
		defs[d.Service] = d
	}
	return defs, buildTable(defs), conflicts
}

// inPortTable: only reachable tcp, udp and tls services get a listener; http services are routed
// by Host header and backend-only services (no timeout) are never reached by the proxy.
func inPortTable(d Definition) bool {
	switch d.Protocol {
	case config.ProtocolTCP, config.ProtocolUDP, config.ProtocolTLS:
		return d.EntryPoint && d.ListenPort > 0
	}
	return false
}

// buildTable is the port table of a resolved definition set: the listeners sorted by
// protocol, port, then service (several tls services share a port), then the reachable http
// services sorted by name.
func buildTable(defs map[string]Definition) []Mapping {
	table := []Mapping{}
	var http []Mapping
	for _, d := range defs {
		m := Mapping{Stack: d.Stack, Service: d.Service, Protocol: d.Protocol,
			ListenPort: d.ListenPort, IdleTimeoutSecs: uint64(d.Timeout.Seconds()), PolicyDigest: d.PolicyDigest}
		if d.PolicyDigest != "" {
			p := d.Policy
			m.Policy = &p
		}
		switch {
		case inPortTable(d):
			table = append(table, m)
		case d.Protocol == config.ProtocolHTTP && d.EntryPoint:
			m.ListenPort = 0
			http = append(http, m)
		}
	}
	sort.Slice(table, func(i, j int) bool {
		if table[i].Protocol != table[j].Protocol {
			return table[i].Protocol < table[j].Protocol
		}
		if table[i].ListenPort != table[j].ListenPort {
			return table[i].ListenPort < table[j].ListenPort
		}
		return table[i].Service < table[j].Service
	})
	sort.Slice(http, func(i, j int) bool { return http[i].Service < http[j].Service })
	return append(table, http...)
}

// portsOnly is the listeners of a table (what /v1/port-mappings shows).
func portsOnly(table []Mapping) []Mapping {
	out := make([]Mapping, 0, len(table))
	for _, m := range table {
		if m.isPort() {
			out = append(out, m)
		}
	}
	return out
}

// maxDiffParts bounds the changes tableDiff names.
const maxDiffParts = 20

// tableDiff describes what changed between two tables, for the log line of each publication.
func tableDiff(old, cur []Mapping) string {
	key := func(m Mapping) string {
		switch {
		case !m.isPort():
			return m.Protocol + "/" + m.Service
		case m.Protocol == config.ProtocolTLS: // one entry per service on a shared port
			return fmt.Sprintf("%s/%d/%s", m.Protocol, m.ListenPort, m.Service)
		}
		return fmt.Sprintf("%s/%d", m.Protocol, m.ListenPort)
	}
	// "~" names a change; "~policy" one of the policy alone.
	change := func(o, m Mapping) string {
		if m.PolicyDigest != o.PolicyDigest {
			if m.PolicyDigest = o.PolicyDigest; o.same(m) {
				return "~policy:"
			}
		}
		return "~"
	}
	before := map[string]Mapping{}
	for _, m := range old {
		before[key(m)] = m
	}
	var parts []string
	seen := map[string]bool{}
	for _, m := range cur {
		k := key(m)
		seen[k] = true
		switch o, ok := before[k]; {
		case !ok:
			parts = append(parts, "+"+k+"="+m.Service)
		case !o.same(m):
			parts = append(parts, change(o, m)+k+"="+m.Service)
		}
	}
	for _, m := range old {
		if k := key(m); !seen[k] {
			parts = append(parts, "-"+k+"="+m.Service)
		}
	}
	// One log line per publication, bounded: a table of thousands must not make a line of
	// hundreds of kilobytes.
	if len(parts) > maxDiffParts {
		parts = append(parts[:maxDiffParts:maxDiffParts], fmt.Sprintf("(+%d more)", len(parts)-maxDiffParts))
	}
	return strings.Join(parts, " ")
}

// toProto converts a table for WatchPortMappings: listeners in mappings, http services in
// http_services, each with its policy.
func toProto(version uint64, table []Mapping) *pb.PortMappingBundle {
	b := &pb.PortMappingBundle{Version: version, Mappings: make([]*pb.PortMapping, 0, len(table))}
	for _, m := range table {
		e := &pb.PortMapping{Service: m.Service, Stack: m.Stack, ListenPort: uint32(m.ListenPort),
			IdleTimeoutSecs: m.IdleTimeoutSecs}
		if m.Policy != nil {
			e.Policy = servicepolicy.ToProto(*m.Policy)
		}
		switch m.Protocol {
		case config.ProtocolHTTP:
			e.Protocol = pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP
			b.HttpServices = append(b.HttpServices, e)
			continue
		case config.ProtocolUDP:
			e.Protocol = pb.ServiceProtocol_SERVICE_PROTOCOL_UDP
		case config.ProtocolTLS:
			e.Protocol = pb.ServiceProtocol_SERVICE_PROTOCOL_TLS
		default:
			e.Protocol = pb.ServiceProtocol_SERVICE_PROTOCOL_TCP
		}
		b.Mappings = append(b.Mappings, e)
	}
	return b
}
