package server

import (
	"sort"
	"sync"
	"time"

	"github.com/nullnet/nullnet/config"
)

// Consul conventions shared by the mirror (writer) and every reader.
const (
	// DefinitionTag marks a catalog instance as a nullnet stack-service definition (not a replica).
	DefinitionTag = "nullnet-definition"
	// DefinitionsNode is the virtual Consul node that holds every definition, so definitions do
	// not depend on the health of whichever agent happened to be leader.
	DefinitionsNode = "nullnet-stacks"
	MetaStack       = "nullnet-stack"
	MetaProtocol    = "nullnet-protocol"
	MetaListenPort  = "nullnet-listen-port"
	MetaTimeout     = "nullnet-timeout" // seconds; absent = backend only (not proxy-reachable)
	// MetaNode on a replica names the nullnet node that serves it (set by client agents for
	// host services); replicas registered by others are matched through their Consul node.
	MetaNode = "nullnet-node"
)

// Definition is one stack service as every server knows it: read back from Consul, the source
// of truth, not from the local stack files.
type Definition struct {
	Stack      string        `json:"stack"`
	Service    string        `json:"service"`
	Protocol   string        `json:"protocol"` // http | tcp | udp
	ListenPort int           `json:"listen_port,omitempty"`
	EntryPoint bool          `json:"entry_point"` // a timeout is set: the proxy may reach it
	Timeout    time.Duration `json:"timeout"`     // 0 with EntryPoint = never idles out
	// CreateIndex orders registrations for deterministic conflict resolution (oldest wins).
	CreateIndex uint64 `json:"create_index"`
	// Policy is the service's edge settings, read from Consul KV (see servicepolicy); zero
	// when none. PolicyDigest identifies it (servicepolicy.Digest of its JSON; "" = none).
	Policy       config.ServicePolicy `json:"policy,omitzero"`
	PolicyDigest string               `json:"policy_digest,omitempty"`
	// announced is the digest the catalog entry names (servicepolicy.MetaDigest): the
	// document the definition should carry. It differs from PolicyDigest while the KV answer
	// lags the catalog answer, or when the document in KV is not the one announced.
	announced string
}

// Equal compares two definitions; the policies by digest.
func (d Definition) Equal(o Definition) bool {
	return d.Stack == o.Stack && d.Service == o.Service && d.Protocol == o.Protocol && d.ListenPort == o.ListenPort &&
		d.EntryPoint == o.EntryPoint && d.Timeout == o.Timeout && d.CreateIndex == o.CreateIndex &&
		d.PolicyDigest == o.PolicyDigest && d.announced == o.announced
}

// definitionSet is the current definitions with change notification; written by the catalog
// watcher, read by the Proxy RPC and session lifecycle.
type definitionSet struct {
	mu      sync.RWMutex
	defs    map[string]Definition // by service name (unique across stacks)
	version uint64
	changed chan struct{} // closed and replaced on every Set
}

func newDefinitionSet() *definitionSet {
	return &definitionSet{defs: map[string]Definition{}, changed: make(chan struct{})}
}

// Set replaces the whole set and wakes every waiter.
func (d *definitionSet) Set(defs map[string]Definition) {
	d.mu.Lock()
	d.defs = defs
	d.version++
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// Get returns the definition of a service.
func (d *definitionSet) Get(service string) (Definition, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	def, ok := d.defs[service]
	return def, ok
}

// All returns every definition sorted by service name, the version and a channel closed on the
// next change.
func (d *definitionSet) All() ([]Definition, uint64, <-chan struct{}) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]Definition, 0, len(d.defs))
	for _, def := range d.defs {
		out = append(out, def)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out, d.version, d.changed
}
