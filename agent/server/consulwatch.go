package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/events"
)

// How the server watches Consul: a constant number of blocking queries, whatever the number of
// services (one per service would need one connection each, and a Consul agent refuses a
// client past 200 concurrent connections, http_max_conns_per_client):
//
//   - definitions: the node DefinitionsNode, filtered to DefinitionTag (catalog.go). Its index
//     is the node's own, so it wakes only when definitions change; one answer holds them all.
//   - services: the service names on every other node (/v1/catalog/services with a filter).
//     It wakes on any service change and carries names and tags: definitions registered
//     elsewhere (foreign) are read from it, and the replica watcher learns which names have
//     instances at all and which changed tags.
//   - checks: every health check (/v1/health/state/any), for the replica watcher: a changed
//     check names the service (or node) whose instances to read again.
//   - policies: the KV prefix servicepolicy.KVPrefix, the stack services' policy documents
//     (policies.go).
//
// Everything else is a non-blocking read of what changed, through a small bounded pool. With
// the leader lock's own blocking query, a leader holds five blocking queries, and the rest of
// its requests share at most replicaFetchers+2 more connections.

// consulServiceName is the service every Consul server registers for itself.
const consulServiceName = "consul"

// servicesView is one answer of the services watch: names (with the union of their tags) of
// services on any node but DefinitionsNode.
type servicesView map[string][]string

// queryServices is the services watch's query.
func (s *Server) queryServices(ctx context.Context, index uint64, wait time.Duration) (servicesView, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait,
		Filter: fmt.Sprintf("Node != %q", DefinitionsNode)}).WithContext(ctx)
	names, meta, err := s.cfg.Consul.Catalog().Services(q)
	if err != nil {
		return nil, 0, consul.QueryError("listing catalog services", consul.ACLAllRead, err)
	}
	if err := consul.CheckFiltered(meta, "listing catalog services", consul.ACLAllRead); err != nil {
		return nil, 0, err
	}
	for _, tags := range names {
		slices.Sort(tags) // Consul builds each name's tag union from a map: order varies
	}
	if _, ok := names[consulServiceName]; !ok {
		// Consul leaves out X-Consul-Results-Filtered-By-ACLs for requests without a token,
		// so an anonymous reader cannot be told that its answer was cut. Every Consul server
		// registers the service "consul": an answer without it is not the catalog.
		return nil, 0, consul.SuspectFiltered(ctx, s.cfg.Consul, "listing catalog services", consul.ACLAllRead,
			errors.New(`the answer lacks the service "consul" every Consul server registers (no token, or a token that cannot read it)`))
	}
	return names, meta.LastIndex, nil
}

// aclReporter returns a WatchConfig.OnError that emits consul_acl_denied once per outage of a
// watch when Consul's ACLs are the cause. A filtered or refused answer is never taken for an
// empty catalog: the watch keeps its last good state, as through any outage.
func (s *Server) aclReporter(watch string) func(error, int) {
	var mu sync.Mutex
	reported := false
	return func(err error, failures int) {
		mu.Lock()
		defer mu.Unlock()
		if failures == 1 {
			reported = false
		}
		var acl *consul.ACLError
		if reported || !errors.As(err, &acl) {
			return
		}
		reported = true
		s.logger.Error("Consul ACLs hide what the server must read; keeping the last good state", "watch", watch,
			"query", acl.Query, "missing", acl.Missing, "filtered", acl.Filtered)
		s.events.Emit(events.Event{Kind: events.ConsulACLDenied, Severity: events.Error, Message: acl.Error(),
			Fields: map[string]string{"watch": watch, "query": acl.Query, "missing_acl": acl.Missing,
				"filtered": strconv.FormatBool(acl.Filtered)}})
	}
}
