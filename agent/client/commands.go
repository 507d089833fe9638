package client

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	pb "github.com/nullnet/nullnet/proto"
)

// commandTimeout bounds one overlay command; the server's own setup timeout is shorter, so a
// command that takes this long has already failed from the server's point of view.
const commandTimeout = 30 * time.Second

// command is one OverlaySetup or OverlayTeardown from the server.
type command struct {
	id       string
	netID    uint32
	side     overlay.Side
	setup    *pb.OverlaySetup
	teardown *pb.OverlayTeardown
}

func (c command) kind() string {
	if c.setup != nil {
		return "setup"
	}
	return "teardown"
}

// commandFrom extracts a command from a server message; ok is false for other messages.
func commandFrom(m *pb.ServerMessage) (command, bool) {
	switch {
	case m.GetOverlaySetup() != nil:
		s := m.GetOverlaySetup()
		return command{id: s.GetCommandId(), netID: s.GetNetId(), side: sideFromProto(s.GetSide()), setup: s}, true
	case m.GetOverlayTeardown() != nil:
		t := m.GetOverlayTeardown()
		return command{id: t.GetCommandId(), netID: t.GetNetId(), side: sideFromProto(t.GetSide()), teardown: t}, true
	}
	return command{}, false
}

func sideFromProto(s pb.OverlaySide) overlay.Side {
	switch s {
	case pb.OverlaySide_OVERLAY_SIDE_SERVICE:
		return overlay.SideService
	case pb.OverlaySide_OVERLAY_SIDE_PROXY:
		return overlay.SideProxy
	}
	return 0
}

func sideToProto(s overlay.Side) pb.OverlaySide {
	switch s {
	case overlay.SideService:
		return pb.OverlaySide_OVERLAY_SIDE_SERVICE
	case overlay.SideProxy:
		return pb.OverlaySide_OVERLAY_SIDE_PROXY
	}
	return pb.OverlaySide_OVERLAY_SIDE_UNSPECIFIED
}

type endKey struct {
	netID uint32
	side  overlay.Side
}

// EndStatus is one tunnel end this node built, as shown in /v1/agent/self.
type EndStatus struct {
	NetID   uint32    `json:"net_id"`
	Side    string    `json:"side"`
	Local   string    `json:"local_underlay"`
	Remote  string    `json:"remote_underlay"`
	Bridge  string    `json:"bridge_address"`
	MTU     int       `json:"mtu"`
	Service string    `json:"service,omitempty"`
	Since   time.Time `json:"since"`
}

// Execute runs one command and returns its ack. It is what the control channel calls for every
// OverlaySetup/OverlayTeardown (through the per-net-id executor); tests call it directly.
func (c *Client) Execute(ctx context.Context, m *pb.ServerMessage) (*pb.CommandAck, error) {
	cmd, ok := commandFrom(m)
	if !ok {
		return nil, fmt.Errorf("not an overlay command: %T", m.GetMsg())
	}
	return c.execute(ctx, cmd), nil
}

// validate checks what the overlay would otherwise be asked to do: a command from a buggy or
// hostile server gets an error ack naming the field, never a kernel request.
func (cmd command) validate() error {
	if err := overlay.ValidateNetID(cmd.netID); err != nil {
		return err
	}
	if !cmd.side.Valid() {
		return fmt.Errorf("side is neither service nor proxy")
	}
	if s := cmd.setup; s != nil && s.GetMtu() != 0 && (s.GetMtu() < 576 || s.GetMtu() > 65535) {
		return fmt.Errorf("mtu %d is outside 576-65535", s.GetMtu())
	}
	return nil
}

// execute builds or removes the end and answers once the kernel objects exist (or are gone).
func (c *Client) execute(ctx context.Context, cmd command) *pb.CommandAck {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	start := time.Now()
	var err error
	var detail []string
	if err = cmd.validate(); err != nil {
		err = fmt.Errorf("invalid %s command: %w", cmd.kind(), err)
	} else if cmd.setup != nil {
		detail, err = c.setup(ctx, cmd)
	} else {
		err = c.teardown(ctx, cmd)
	}
	return c.finish(cmd, start, detail, err)
}

// finish turns a command's outcome into its ack, and records its metric and event.
func (c *Client) finish(cmd command, start time.Time, detail []string, err error) *pb.CommandAck {
	took := time.Since(start)
	ack := &pb.CommandAck{CommandId: cmd.id, DurationMicros: uint64(took.Microseconds())}

	labels := []metrics.Label{{Name: "result", Value: "ok"}}
	fields := map[string]string{
		"command_id":  cmd.id,
		"net_id":      strconv.FormatUint(uint64(cmd.netID), 10),
		"side":        cmd.side.String(),
		"duration_ms": strconv.FormatFloat(float64(took.Microseconds())/1000, 'f', 3, 64),
	}
	for i := 0; i+1 < len(detail); i += 2 {
		fields[detail[i]] = detail[i+1]
	}
	kind, sev, msg := events.OverlaySetupCompleted, events.Info, "tunnel end ready"
	if cmd.teardown != nil {
		kind, msg = events.OverlayTeardownCompleted, "tunnel end removed"
	}
	if err != nil {
		ack.Error = err.Error()
		labels[0].Value = "error"
		fields["error"] = err.Error()
		kind, sev, msg = events.OverlaySetupFailed, events.Error, "tunnel end setup failed"
		if cmd.teardown != nil {
			kind, msg = events.OverlayTeardownFailed, "tunnel end teardown failed"
		}
	}
	if cmd.setup != nil {
		metrics.MeasureSinceWithLabels([]string{"nullnet", "client", "overlay", "setup"}, start, labels)
	} else {
		metrics.MeasureSinceWithLabels([]string{"nullnet", "client", "overlay", "teardown"}, start, labels)
	}
	c.emit(events.Event{Kind: kind, Severity: sev, Message: msg, Fields: fields})
	return ack
}

func (c *Client) setup(ctx context.Context, cmd command) ([]string, error) {
	s := cmd.setup
	local, err := c.underlayAddr(s.GetLocalUnderlay())
	if err != nil {
		return nil, fmt.Errorf("local_underlay: %w", err)
	}
	remote, err := netip.ParseAddr(s.GetRemoteUnderlay())
	if err != nil {
		return nil, fmt.Errorf("remote_underlay %q: %w", s.GetRemoteUnderlay(), err)
	}
	e := overlay.End{NetID: cmd.netID, Side: cmd.side, Local: local, Remote: remote, MTU: int(s.GetMtu()),
		Device: c.agentConfig().Client.NetworkInterface}
	if mtu := c.nodeUnderlayMTU(); e.MTU == 0 && mtu > 0 {
		e.MTU = overlay.OverlayMTU(mtu)
	}
	res, err := c.overlay.Setup(ctx, e)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	key := endKey{cmd.netID, cmd.side}
	if _, ok := c.ends[key]; !ok || res.Changed {
		c.ends[key] = EndStatus{NetID: cmd.netID, Side: cmd.side.String(), Local: local.String(), Remote: remote.String(),
			Bridge: res.Bridge.String(), MTU: res.MTU, Service: s.GetService(), Since: time.Now()}
	}
	c.mu.Unlock()
	return []string{"service", s.GetService(), "remote_underlay", remote.String(), "bridge", res.Bridge.String(),
		"changed", strconv.FormatBool(res.Changed)}, nil
}

func (c *Client) teardown(ctx context.Context, cmd command) error {
	if err := c.overlay.Teardown(ctx, cmd.netID, cmd.side); err != nil {
		return err
	}
	c.forgetEnd(cmd)
	return nil
}

func (c *Client) forgetEnd(cmd command) {
	c.mu.Lock()
	delete(c.ends, endKey{cmd.netID, cmd.side})
	c.mu.Unlock()
}

// adoptEnds records ends found in the kernel at start-up as this node's, so that the first
// Hello reports them and a later teardown or shutdown treats them like ends it built.
func (c *Client) adoptEnds(kept []overlay.RecoveredEnd) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range kept {
		st := EndStatus{NetID: e.NetID, Side: e.Side.String(), Bridge: e.Bridge.String(), MTU: e.MTU, Since: now}
		if e.Local.IsValid() {
			st.Local, st.Remote = e.Local.String(), e.Remote.String()
		}
		c.ends[endKey{e.NetID, e.Side}] = st
	}
}

// underlayAddr is the command's local underlay address, or the node's advertise_addr when the
// server left it empty.
func (c *Client) underlayAddr(v string) (netip.Addr, error) {
	if v == "" {
		v = c.agentConfig().AdvertiseAddr
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", v)
	}
	return a, nil
}

// activeEnds lists the ends this node built, sorted, for Hello and Status.
func (c *Client) activeEnds() []EndStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]EndStatus, 0, len(c.ends))
	for _, e := range c.ends {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NetID != out[j].NetID {
			return out[i].NetID < out[j].NetID
		}
		return out[i].Side < out[j].Side
	})
	return out
}

// teardownAll removes every end this node built; used on a graceful stop so a stopped agent
// leaves no devices behind (a crashed one is cleaned up on its next start).
func (c *Client) teardownAll(ctx context.Context) {
	c.mu.Lock()
	keys := make([]endKey, 0, len(c.ends))
	for k := range c.ends {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	if bt, ok := c.overlay.(batchTeardowner); ok && len(keys) > 1 {
		// One batched delete instead of one per end (see batch.go).
		refs := make([]overlay.EndRef, len(keys))
		for i, k := range keys {
			refs[i] = overlay.EndRef{NetID: k.netID, Side: k.side}
		}
		errs := bt.TeardownBatch(ctx, refs)
		for i, k := range keys {
			if errs[i] != nil {
				c.logger.Warn("removing a tunnel end at shutdown failed", "net_id", k.netID, "side", k.side, "error", errs[i])
				continue
			}
			c.forgetEnd(command{netID: k.netID, side: k.side})
		}
		c.logger.Info("removed tunnel ends at shutdown", "count", len(keys))
		return
	}
	for _, k := range keys {
		if err := c.overlay.Teardown(ctx, k.netID, k.side); err != nil {
			c.logger.Warn("removing a tunnel end at shutdown failed", "net_id", k.netID, "side", k.side, "error", err)
			continue
		}
		c.mu.Lock()
		delete(c.ends, k)
		c.mu.Unlock()
	}
	if len(keys) > 0 {
		c.logger.Info("removed tunnel ends at shutdown", "count", len(keys))
	}
}
