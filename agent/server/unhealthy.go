package server

import (
	"maps"
	"slices"
	"strings"
	"sync"

	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/status"
)

// close_on_unhealthy: the replica watcher knows every entry point's instances and their health
// (replicas.go). The critical ones of services whose policy sets close_on_unhealthy are
// published as one versioned set, streamed to every proxy by WatchUnhealthyReplicas (full set on
// subscribe, then after every change, as the port table). A set, not a stream of "close"
// commands: a proxy that reconnects gets the current state and misses nothing, and a replica
// that stays critical keeps its uses from being re-established through adoption. The proxy
// matches it against the replica id the Proxy RPC returned for each use.

// unhealthySet is the critical replicas of close_on_unhealthy services.
type unhealthySet struct {
	mu       sync.Mutex
	critical map[string][]string // entry point -> its critical replica ids, sorted
	closing  map[string]bool     // services whose policy has close_on_unhealthy
	version  uint64
	list     []*pb.UnhealthyReplica // published: shared, never modified
	changed  chan struct{}
}

func newUnhealthySet() *unhealthySet {
	return &unhealthySet{critical: map[string][]string{}, closing: map[string]bool{}, version: 1,
		changed: make(chan struct{})}
}

// setCritical records a service's critical replicas (ids in any order) and reports whether
// the published set changed.
func (u *unhealthySet) setCritical(service string, ids []string) bool {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	u.mu.Lock()
	defer u.mu.Unlock()
	if slices.Equal(u.critical[service], ids) {
		return false
	}
	if len(ids) == 0 {
		delete(u.critical, service)
	} else {
		u.critical[service] = ids
	}
	return u.publishLocked()
}

// setServices takes the definitions: which services close, and which are still watched (the
// critical replicas of the others are forgotten). It reports whether the published set changed.
func (u *unhealthySet) setServices(closing, watched map[string]bool) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for svc := range u.critical {
		if !watched[svc] {
			delete(u.critical, svc)
		}
	}
	u.closing = maps.Clone(closing)
	return u.publishLocked()
}

// publishLocked rebuilds the list and, when it differs, publishes it as a new version.
func (u *unhealthySet) publishLocked() bool {
	var list []*pb.UnhealthyReplica
	for _, svc := range slices.Sorted(maps.Keys(u.critical)) {
		if !u.closing[svc] {
			continue
		}
		for _, id := range u.critical[svc] {
			list = append(list, &pb.UnhealthyReplica{Service: svc, ReplicaId: id})
		}
	}
	if slices.EqualFunc(list, u.list, func(a, b *pb.UnhealthyReplica) bool {
		return a.GetService() == b.GetService() && a.GetReplicaId() == b.GetReplicaId()
	}) {
		return false
	}
	u.list = list
	u.version++
	close(u.changed)
	u.changed = make(chan struct{})
	return true
}

// snapshot returns the published list (shared: do not modify), its version and a channel
// closed at the next change.
func (u *unhealthySet) snapshot() ([]*pb.UnhealthyReplica, uint64, <-chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.list, u.version, u.changed
}

// logChange writes one line per published change.
func (u *unhealthySet) logChange(p *plane, changed bool) {
	if !changed {
		return
	}
	list, version, _ := u.snapshot()
	p.logger.Info("unhealthy replicas of close_on_unhealthy services published", "version", version,
		"count", len(list), "replicas", describeUnhealthy(list))
}

// describeUnhealthy renders a list for the log, bounded.
func describeUnhealthy(list []*pb.UnhealthyReplica) string {
	parts := make([]string, 0, min(len(list), maxDiffParts))
	for i, r := range list {
		if i == maxDiffParts {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, r.GetService()+"="+r.GetReplicaId())
	}
	return strings.Join(parts, " ")
}

// WatchUnhealthyReplicas streams the unhealthy set: at once, then after every change.
func (i *ingressService) WatchUnhealthyReplicas(req *pb.WatchUnhealthyReplicasRequest, stream pb.Ingress_WatchUnhealthyReplicasServer) error {
	if err := validateWatch(&pb.WatchPortMappingsRequest{ProxyNode: req.GetProxyNode()}); err != nil {
		return err
	}
	u := i.s.plane.unhealthy
	ctx := stream.Context()
	var sent uint64
	for {
		list, version, changed := u.snapshot()
		if version > sent {
			if err := stream.Send(&pb.UnhealthyReplicas{Version: version, Replicas: list}); err != nil {
				return err
			}
			sent = version
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}
