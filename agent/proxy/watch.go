package proxy

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/lib/retry"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reconnect backoff of the port-table stream: capped, jittered, reset once a table arrived.
const (
	watchBackoffMin = 250 * time.Millisecond
	watchBackoffMax = 10 * time.Second
)

// watch keeps a WatchPortMappings stream open and reconciles on every pushed table. Losing the
// stream changes nothing in the data plane: listeners and connections keep running on the last
// table until a new one arrives.
func (p *Proxy) watch(ctx context.Context) {
	client := pb.NewIngressClient(p.cfg.Conn)
	backoff := watchBackoffMin
	// broken: a stream was lost before; the next table that arrives is a reconnection, after
	// which the live uses are re-announced (the server may have restarted).
	broken := false
	for ctx.Err() == nil {
		p.setStream("connecting", "")
		gotTable, err := p.watchOnce(ctx, client, broken)
		broken = true
		if ctx.Err() != nil {
			return
		}
		if gotTable {
			backoff = watchBackoffMin
		}
		p.setStream("disconnected", errString(err))
		p.logger.Warn("port table stream lost; keeping the current listeners and reconnecting",
			"error", err, "retry_in", backoff)
		if !retry.Sleep(ctx, retry.Jitter(backoff, 0.2)) {
			return
		}
		backoff = min(backoff*2, watchBackoffMax)
	}
}

// watchOnce runs one stream until it fails; it reports whether at least one table arrived.
func (p *Proxy) watchOnce(ctx context.Context, client pb.IngressClient, reconnect bool) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchPortMappings(sctx, &pb.WatchPortMappingsRequest{ProxyNode: p.cfg.Agent.NodeName})
	if err != nil {
		return false, err
	}
	return recvStream(ctx, stream.Recv, func(b *pb.PortMappingBundle, first bool) {
		if first {
			p.setStream("connected", "")
		}
		p.applyBundle(b)
		if first && reconnect {
			p.kickReannounce()
		}
	})
}

// recvStream reads a server stream until it fails, handing every message to each (first is
// true for the first one), and reports whether any arrived. The stream's end and a cancel
// caused by ctx are turned into errors that say so.
func recvStream[T any](ctx context.Context, recv func() (T, error), each func(m T, first bool)) (bool, error) {
	got := false
	for {
		m, err := recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			} else if status.Code(err) == codes.Canceled && ctx.Err() != nil {
				err = ctx.Err()
			}
			return got, err
		}
		each(m, !got)
		got = true
	}
}

// applyBundle logs a pushed table and reconciles the listeners with it.
func (p *Proxy) applyBundle(b *pb.PortMappingBundle) {
	want, problems := desiredTable(b)
	p.logger.Info("port table received", "version", b.GetVersion(), "mappings", len(want),
		"table", describeTable(want))
	// A few problems in full, then a count: a bad table must not flood the log.
	const maxProblemLines = 10
	for i, pr := range problems {
		if i == maxProblemLines {
			p.logger.Warn("more port table entries ignored", "version", b.GetVersion(), "count", len(problems)-i)
			break
		}
		p.logger.Warn("port table entry ignored", "version", b.GetVersion(), "problem", pr)
	}
	// One index per bundle; the client rules and the path routes compile from it. All before
	// the listeners: one opened for this bundle sees its policies, and a new service is never
	// served without them.
	ix := servicepolicy.NewIndex(b)
	p.updatePolicies(ix)
	p.setPolicies(ix)
	p.http.setRoutes(ix)
	p.reconcile(b.GetVersion(), want)
	p.mu.Lock()
	p.tableAt = time.Now()
	p.mu.Unlock()
}

func (p *Proxy) setStream(state, errText string) {
	p.mu.Lock()
	p.stream, p.streamErr = state, errText
	p.mu.Unlock()
}
