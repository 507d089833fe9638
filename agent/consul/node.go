package consul

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Node meta the mirror writes next to the services it owns, so that every reader can tell a
// complete set from one the leader is still writing: Consul applies one transaction at a time,
// and a large set takes several (at most MaxTxnOps operations each).
const (
	// MetaDigest is the digest (see Digest) of the owned services the node should hold.
	MetaDigest = "nullnet-digest"
	// MetaCount is how many owned services the node should hold (for progress logs).
	MetaCount = "nullnet-count"
)

// NodeState is one read of a mirror node: the services carrying the owner tag and the node's
// meta. A node that does not exist reads as Exists false and no services.
type NodeState struct {
	Exists   bool
	Meta     map[string]string
	Services map[string]*api.AgentService // by service ID
	Index    uint64

	completeOnce sync.Once
	complete     bool
}

// Complete reports whether the owned services are the set the mirror announced in the node
// meta. A node without the announcement (written by an older nullnet, or by hand) counts as
// complete: there is nothing to compare with.
// The digest is computed once per state (several readers ask).
func (s *NodeState) Complete() bool {
	s.completeOnce.Do(func() {
		want, ok := s.Meta[MetaDigest]
		s.complete = !ok || want == Digest(s.Owned())
	})
	return s.complete
}

// Expected is the announced number of owned services (-1 when not announced or not a count).
func (s *NodeState) Expected() int {
	n, err := strconv.Atoi(s.Meta[MetaCount])
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// Owned returns the owned services in the mirror's form.
func (s *NodeState) Owned() []CatalogService {
	out := make([]CatalogService, 0, len(s.Services))
	for _, a := range s.Services {
		out = append(out, CatalogService{ID: a.ID, Name: a.Service, Tags: a.Tags, Meta: a.Meta})
	}
	return out
}

// ReadNode reads node's services that carry tag, with a blocking query when index > 0. The
// index is the node's own: it moves only when this node changes, not on every catalog write.
func ReadNode(ctx context.Context, client *api.Client, node, tag string, index uint64, wait time.Duration) (*NodeState, uint64, error) {
	// No server-side filter: evaluating one costs Consul CPU per service on every read, and
	// the node holds little but the owned services anyway.
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	list, meta, err := client.Catalog().NodeServiceList(node, q)
	if err != nil {
		return nil, 0, QueryError(fmt.Sprintf("reading node %s", node), ACLNodeRead(node)+" and service:read on its services", err)
	}
	if err := CheckFiltered(meta, fmt.Sprintf("reading node %s", node), ACLNodeRead(node)+" and service:read on its services"); err != nil {
		return nil, 0, err
	}
	return NodeStateFrom(list, meta.LastIndex, tag), meta.LastIndex, nil
}

// NodeStateFrom reads a node's service list answer: the services that carry tag, by ID, and
// the node's meta. A missing node reads as Exists false; null entries and services without an
// ID are skipped, and of two services with one ID the first counts, so that no answer can make
// a reader panic or count a service twice.
func NodeStateFrom(list *api.CatalogNodeServiceList, index uint64, tag string) *NodeState {
	st := &NodeState{Services: map[string]*api.AgentService{}, Meta: map[string]string{}, Index: index}
	if list == nil || list.Node == nil {
		return st
	}
	st.Exists = true
	maps.Copy(st.Meta, list.Node.Meta)
	for _, s := range list.Services {
		if s == nil || s.ID == "" || st.Services[s.ID] != nil {
			continue
		}
		if slices.Contains(s.Tags, tag) { // the filter did this already; kept for old agents
			st.Services[s.ID] = s
		}
	}
	return st
}

// Digest identifies a set of owned services by what the mirror controls: IDs, names, tags
// (order ignored) and meta. Writer and readers compute it the same way.
func Digest(services []CatalogService) string {
	sorted := slices.Clone(services)
	slices.SortFunc(sorted, func(a, b CatalogService) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	h := sha256.New()
	var buf []byte
	str := func(v string) { // length-prefixed, so that no two sets encode alike
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
	}
	for _, s := range sorted {
		buf = buf[:0]
		str(s.ID)
		str(s.Name)
		tags := slices.Clone(s.Tags)
		slices.Sort(tags)
		tags = slices.Compact(tags)
		buf = binary.AppendUvarint(buf, uint64(len(tags)))
		for _, t := range tags {
			str(t)
		}
		buf = binary.AppendUvarint(buf, uint64(len(s.Meta)))
		for _, k := range slices.Sorted(maps.Keys(s.Meta)) {
			str(k)
			str(s.Meta[k])
		}
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
