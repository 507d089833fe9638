package events

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
)

// Reporter is the Emitter of client and proxy agents: it logs each event and forwards it to a
// server with ReportEvent. Delivery is best effort through a bounded queue, so a slow or absent
// server never blocks the data path; what cannot be queued is counted and logged.
type Reporter struct {
	node   string
	client pb.ControlClient
	queue  chan Event
	local  *Store
}

// NewReporter returns a Reporter for node. local, when not nil, is the store of a server that runs
// in the same process: the events go there and nowhere else. Forwarding them too would store each
// one twice when the connection leads back to this process (as in -dev), and a server's ring is
// the place the node's operator reads (`nullnet events` against this agent). conn is then unused.
func NewReporter(node string, conn grpc.ClientConnInterface, local *Store, logger hclog.Logger) *Reporter {
	r := &Reporter{node: node, queue: make(chan Event, 1024), local: local}
	if conn != nil && local == nil {
		r.client = pb.NewControlClient(conn)
	}
	if r.local == nil {
		// Keep a small local ring so that the agent's own log and /v1/agent/self show them.
		r.local = New(256, logger)
	}
	return r
}

// Emit records the event locally and queues it for the server.
func (r *Reporter) Emit(e Event) Event {
	if e.Node == "" {
		e.Node = r.node
	}
	e = r.local.Emit(e)
	if r.client != nil {
		select {
		case r.queue <- e:
		default:
			// Queue full: the local log already has it.
		}
	}
	return e
}

// Run forwards queued events until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	if r.client == nil {
		<-ctx.Done()
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-r.queue:
			sev := map[Severity]pb.Severity{Info: pb.Severity_SEVERITY_INFO, Warning: pb.Severity_SEVERITY_WARNING,
				Error: pb.Severity_SEVERITY_ERROR}[e.Severity]
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = r.client.ReportEvent(cctx, &pb.AgentEvent{Kind: e.Kind, Severity: sev, Node: e.Node,
				Message: e.Message, Fields: e.Fields, TimeUnixMs: e.Time.UnixMilli()})
			cancel()
		}
	}
}

// FromProto converts a reported event.
func FromProto(a *pb.AgentEvent) Event {
	sev := map[pb.Severity]Severity{pb.Severity_SEVERITY_WARNING: Warning, pb.Severity_SEVERITY_ERROR: Error}[a.Severity]
	if sev == "" {
		sev = Info
	}
	e := Event{Kind: a.Kind, Severity: sev, Node: a.Node, Message: a.Message, Fields: a.Fields}
	if a.TimeUnixMs > 0 {
		e.Time = time.UnixMilli(a.TimeUnixMs)
	}
	return e
}
