package server

import (
	"context"
	"slices"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/status"
)

// portTable is the published port table. Writers replace it whole; readers take the latest
// snapshot and a channel closed on the next change, so a slow reader simply skips to whatever
// is newest when it gets back, and no writer ever waits for a reader.
type portTable struct {
	mu      sync.RWMutex
	version uint64 // 0 = not known yet (no answer from Consul so far)
	table   []Mapping
	// bundle is table as WatchPortMappings sends it, built once per version and shared by
	// every subscriber (proto messages are safe to marshal concurrently; never modified).
	bundle  *pb.PortMappingBundle
	changed chan struct{}
}

func newPortTable() *portTable { return &portTable{changed: make(chan struct{})} }

// publish installs table if it differs from the current one and reports whether it did. The
// first publication always happens, even for an empty table: it is the first known state.
func (p *portTable) publish(table []Mapping) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.version > 0 && slices.EqualFunc(p.table, table, Mapping.same) {
		return p.version, false
	}
	p.version++
	p.table = slices.Clone(table)
	p.bundle = toProto(p.version, p.table)
	close(p.changed)
	p.changed = make(chan struct{})
	metrics.SetGauge([]string{"nullnet", "server", "port_table", "version"}, float32(p.version))
	metrics.SetGauge([]string{"nullnet", "server", "port_table", "size"}, float32(len(portsOnly(table))))
	return p.version, true
}

// snapshot returns the current table (shared: do not modify), its version and a channel closed
// on the next change.
func (p *portTable) snapshot() ([]Mapping, uint64, <-chan struct{}) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.table, p.version, p.changed
}

// protoSnapshot returns the current table as sent to the proxies (nil before the first
// publication; shared: do not modify) and a channel closed on the next change.
func (p *portTable) protoSnapshot() (*pb.PortMappingBundle, <-chan struct{}) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.bundle, p.changed
}

// wait blocks until the version is above after, ctx ends or wait passes, and returns the
// snapshot at that moment.
func (p *portTable) wait(ctx context.Context, after uint64, wait time.Duration) ([]Mapping, uint64) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		table, version, changed := p.snapshot()
		if version > after {
			return table, version
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return table, version
		case <-timer.C:
			return table, version
		}
	}
}

// WatchPortMappings streams the full table as soon as it is known, then the full table after
// every change, each with its version. Nothing is sent before the first answer from Consul, so
// a proxy never mistakes "unknown" for "empty" and closes its listeners.
func (i *ingressService) WatchPortMappings(req *pb.WatchPortMappingsRequest, stream pb.Ingress_WatchPortMappingsServer) error {
	if err := validateWatch(req); err != nil {
		return err
	}
	ctx := stream.Context()
	logger := i.s.logger.With("proxy_node", req.GetProxyNode())
	logger.Debug("port table subscriber connected")
	defer logger.Debug("port table subscriber gone")
	labels := []metrics.Label{{Name: "proxy_node", Value: req.GetProxyNode()}}
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "port_table", "subscribers"}, 1, labels)
	var sent uint64
	for {
		b, changed := i.s.table.protoSnapshot()
		if b.GetVersion() > sent {
			// Send blocks only this subscriber; meanwhile publications pile up as a single
			// "newer version" that the next snapshot picks up.
			if err := stream.Send(b); err != nil {
				return err
			}
			sent = b.GetVersion()
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}
