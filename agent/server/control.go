package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/version"
	pb "github.com/nullnet/nullnet/proto"
)

// Errors of the node registry.
var (
	// errNodeNotConnected: the node is known but its control channel is down (within the grace
	// period). A command to it can succeed later.
	errNodeNotConnected = errors.New("node has no control channel")
	// errNodeGone: the node never connected or its grace period ended; its devices are its own
	// business (a restarted agent removes leftovers), so a teardown towards it counts as done.
	errNodeGone = errors.New("node is gone")
	// errAckTimeout: the node did not acknowledge in time.
	errAckTimeout = errors.New("no acknowledgement before the deadline")
)

// nodeInfo is what a node said in its Hello.
type nodeInfo struct {
	Name        string    `json:"name"`
	Underlay    string    `json:"underlay_addr"`
	Roles       []string  `json:"roles"`
	Version     string    `json:"version"`
	UnderlayMTU uint32    `json:"underlay_mtu"`
	Instance    string    `json:"instance_id,omitempty"`
	Connected   bool      `json:"connected"`
	Since       time.Time `json:"since"` // connected or disconnected at
}

// nodeConn is one live control channel.
type nodeConn struct {
	out  chan *pb.ServerMessage // drained by the stream's handler goroutine
	done chan struct{}          // closed when the stream ended

	mu      sync.Mutex
	pending map[string]chan *pb.CommandAck
}

type nodeState struct {
	info  nodeInfo
	conn  *nodeConn // nil while disconnected
	grace *time.Timer
}

// registry tracks the nodes' control channels, sends commands and waits for their acks, and
// declares a node gone once its channel has been down for the grace period.
type registry struct {
	logger hclog.Logger
	events events.Emitter
	grace  func() time.Duration
	onGone func(node string) // called without the lock

	mu     sync.Mutex
	nodes  map[string]*nodeState
	seq    uint64
	closed bool
}

func newRegistry(logger hclog.Logger, ev events.Emitter, grace func() time.Duration, onGone func(string)) *registry {
	return &registry{logger: logger, events: ev, grace: grace, onGone: onGone, nodes: map[string]*nodeState{}}
}

// connect registers a node's new channel, replacing an older one of the same node. When the
// node's agent restarted (a new instance id), restartedAt is when its old process was last
// seen: uses its proxy role took before then died with that process.
func (r *registry) connect(h *pb.Hello) (c *nodeConn, restartedAt time.Time) {
	c = &nodeConn{out: make(chan *pb.ServerMessage, 64), done: make(chan struct{}), pending: map[string]chan *pb.CommandAck{}}
	r.mu.Lock()
	st := r.nodes[h.NodeName]
	reconnect := st != nil
	if st == nil {
		st = &nodeState{}
		r.nodes[h.NodeName] = st
	}
	if reconnect && st.info.Instance != "" && h.GetInstanceId() != "" && st.info.Instance != h.GetInstanceId() {
		restartedAt = time.Now()
		if st.conn == nil {
			restartedAt = st.info.Since // disconnected at
		}
	}
	if st.grace != nil {
		st.grace.Stop()
		st.grace = nil
	}
	old := st.conn
	st.conn = c
	st.info = nodeInfo{Name: h.NodeName, Underlay: h.UnderlayAddr, Roles: h.Roles, Version: h.Version,
		UnderlayMTU: h.UnderlayMtu, Instance: h.GetInstanceId(), Connected: true, Since: time.Now()}
	r.gaugeLocked()
	r.mu.Unlock()
	if old != nil {
		old.failPending(errNodeNotConnected)
	}
	r.events.Emit(events.Event{Kind: events.NodeConnected, Node: h.NodeName,
		Fields: map[string]string{"underlay_addr": h.UnderlayAddr, "roles": strings.Join(h.Roles, ","),
			"version": h.Version, "reconnect": fmt.Sprint(reconnect), "restarted": fmt.Sprint(!restartedAt.IsZero())}})
	return c, restartedAt
}

// disconnect marks c's node disconnected (if c is still its channel) and starts the grace timer.
func (r *registry) disconnect(name string, c *nodeConn, cause error) {
	close(c.done)
	c.failPending(errNodeNotConnected)
	r.mu.Lock()
	st := r.nodes[name]
	if st == nil || st.conn != c {
		r.mu.Unlock()
		return // replaced by a newer channel
	}
	st.conn = nil
	st.info.Connected = false
	st.info.Since = time.Now()
	grace := r.grace()
	if !r.closed {
		st.grace = time.AfterFunc(grace, func() { r.expire(name, st) })
	}
	r.gaugeLocked()
	r.mu.Unlock()
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	r.events.Emit(events.Event{Kind: events.NodeDisconnected, Severity: events.Warning, Node: name, Message: msg,
		Fields: map[string]string{"grace_period": grace.String()}})
}

func (r *registry) expire(name string, st *nodeState) {
	r.mu.Lock()
	if r.closed || r.nodes[name] != st || st.conn != nil {
		r.mu.Unlock()
		return
	}
	delete(r.nodes, name)
	r.mu.Unlock()
	r.logger.Warn("node's control channel stayed down for the grace period; its sessions are torn down", "node", name)
	r.onGone(name)
}

// close stops grace timers (nodes are not declared gone during shutdown).
func (r *registry) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, st := range r.nodes {
		if st.grace != nil {
			st.grace.Stop()
		}
	}
}

func (r *registry) gaugeLocked() {
	n := 0
	for _, st := range r.nodes {
		if st.conn != nil {
			n++
		}
	}
	metrics.SetGauge([]string{"nullnet", "server", "nodes_connected"}, float32(n))
}

// node returns a node's Hello and whether its channel is up. ok is false for an unknown node.
func (r *registry) node(name string) (info nodeInfo, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.nodes[name]
	if st == nil {
		return nodeInfo{}, false
	}
	return st.info, true
}

// list returns every known node, by name.
func (r *registry) list() []nodeInfo {
	r.mu.Lock()
	out := make([]nodeInfo, 0, len(r.nodes))
	for _, st := range r.nodes {
		out = append(out, st.info)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// command sends one command to a node and waits for its ack until ctx ends.
func (r *registry) command(ctx context.Context, name string, build func(id string) *pb.ServerMessage) (*pb.CommandAck, error) {
	r.mu.Lock()
	st := r.nodes[name]
	if st == nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("node %q: %w", name, errNodeGone)
	}
	c := st.conn
	if c == nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("node %q: %w", name, errNodeNotConnected)
	}
	r.seq++
	id := fmt.Sprintf("c%d", r.seq)
	r.mu.Unlock()

	ch := make(chan *pb.CommandAck, 1)
	c.mu.Lock()
	if c.pending == nil { // already failed: the stream ended
		c.mu.Unlock()
		return nil, fmt.Errorf("node %q: %w", name, errNodeNotConnected)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.pending != nil {
			delete(c.pending, id)
		}
		c.mu.Unlock()
	}()
	select {
	case c.out <- build(id):
	case <-c.done:
		return nil, fmt.Errorf("node %q: %w", name, errNodeNotConnected)
	case <-ctx.Done():
		return nil, fmt.Errorf("node %q: sending command: %w", name, ctxErr(ctx))
	}
	select {
	case ack, ok := <-ch:
		if !ok || ack == nil {
			return nil, fmt.Errorf("node %q: control channel closed before the ack: %w", name, errNodeNotConnected)
		}
		return ack, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("node %q: %w", name, ctxErr(ctx))
	}
}

func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errAckTimeout
	}
	return ctx.Err()
}

// deliver hands an ack to the command waiting for it.
func (c *nodeConn) deliver(ack *pb.CommandAck) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.pending[ack.CommandId]
	if ch == nil {
		return false
	}
	delete(c.pending, ack.CommandId)
	ch <- ack
	return true
}

func (c *nodeConn) failPending(error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.pending = nil
}

// ControlChannel is a node's command stream: Hello first, then acks up and commands down.
func (c *controlService) ControlChannel(stream pb.Control_ControlChannelServer) error {
	reg := c.s.plane.nodes
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHello()
	if err := validateHello(h, c.s.network() == networkVXLAN); err != nil {
		return err
	}
	conn, restartedAt := reg.connect(h)
	connectedAt := time.Now()
	if !restartedAt.IsZero() {
		c.s.plane.nodeRestarted(h.NodeName, restartedAt)
	}
	if err := stream.Send(&pb.ServerMessage{Msg: &pb.ServerMessage_Welcome{Welcome: &pb.Welcome{
		ServerName: c.s.agentConfig().NodeName, Version: version.Version}}}); err != nil {
		reg.disconnect(h.NodeName, conn, err)
		return err
	}
	c.s.plane.reconcileEnds(h, connectedAt)
	recvErr := make(chan error, 1)
	go func() { // ends when the stream does (the handler returning cancels the stream's context)
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			ack := m.GetAck()
			if ack == nil {
				continue
			}
			if err := validateAck(ack); err != nil {
				reg.logger.Warn("malformed ack ignored", "node", h.NodeName, "error", err)
				continue
			}
			if !conn.deliver(ack) {
				reg.logger.Debug("ack for an unknown or expired command", "node", h.NodeName, "command_id", ack.CommandId)
			}
		}
	}()
	for {
		select {
		case m := <-conn.out:
			if err := stream.Send(m); err != nil {
				reg.disconnect(h.NodeName, conn, err)
				return err
			}
		case err := <-recvErr:
			reg.disconnect(h.NodeName, conn, err)
			return nil
		case <-stream.Context().Done():
			reg.disconnect(h.NodeName, conn, stream.Context().Err())
			return stream.Context().Err()
		}
	}
}

// ReportEvent stores an event an agent reported.
func (c *controlService) ReportEvent(_ context.Context, e *pb.AgentEvent) (*pb.ReportEventResponse, error) {
	if err := validateEvent(e); err != nil {
		return nil, err
	}
	c.s.events.Emit(events.FromProto(e))
	return &pb.ReportEventResponse{}, nil
}
