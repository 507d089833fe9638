package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/agent/version"
	"github.com/nullnet/nullnet/lib/retry"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
)

// runControl keeps one control channel open to a server until ctx ends: it opens the stream,
// says Hello, hands commands to the executor and sends acks back; when the stream ends it waits
// a capped, jittered backoff and opens a new one. Commands in flight keep running across a
// reconnect and their acks go out on the next stream.
func (c *Client) runControl(ctx context.Context) {
	failures := 0
	for {
		established, err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if established {
			failures = 0
		}
		failures++
		delay := retry.Backoff(100*time.Millisecond, c.reconnectMax, failures)
		c.logger.Warn("control channel closed; reconnecting", "error", err, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session runs one stream. established is true once the server answered Hello with Welcome.
func (c *Client) session(ctx context.Context) (established bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Start-up cleanup runs once per process, before the first stream opens and so before the
	// first Hello: the server must never send a command for an end that a later cleanup would
	// remove. It runs before the stream opens because removing many leftovers takes a while
	// (tens of ms per device) and a server need not wait for a Hello that long.
	c.cleanupOnce.Do(func() { c.startupCleanup(sctx) })

	// WaitForReady lets gRPC's own connection backoff decide when a server is reachable,
	// instead of failing at once while it is down.
	stream, err := pb.NewControlClient(c.cfg.Conn).ControlChannel(sctx, grpc.WaitForReady(true))
	if err != nil {
		return false, fmt.Errorf("opening the control channel: %w", err)
	}

	if err := stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Hello{Hello: c.hello()}}); err != nil {
		return false, fmt.Errorf("sending hello: %w", err)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.sendAcks(sctx, cancel, stream)
	}()
	defer func() {
		cancel() // ends the sender
		wg.Wait()
	}()

	for {
		m, err := stream.Recv()
		if err != nil {
			c.setConnected("")
			if established {
				c.emit(events.Event{Kind: events.ControlChannelClosed, Severity: events.Warning,
					Message: "control channel to the server closed", Fields: map[string]string{"error": errText(err)}})
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			}
			return established, err
		}
		switch {
		case m.GetWelcome() != nil:
			w := m.GetWelcome()
			established = true
			c.setConnected(w.GetServerName())
			c.logger.Info("control channel established", "server", w.GetServerName(), "server_version", w.GetVersion())
			c.emit(events.Event{Kind: events.ControlChannelEstablished, Message: "control channel to the server open",
				Fields: map[string]string{"server": w.GetServerName()}})
		default:
			cmd, ok := commandFrom(m)
			if !ok {
				c.logger.Warn("ignoring an unknown message on the control channel", "type", fmt.Sprintf("%T", m.GetMsg()))
				continue
			}
			metrics.IncrCounterWithLabels([]string{"nullnet", "client", "commands", "received"}, 1,
				[]metrics.Label{{Name: "kind", Value: cmd.kind()}})
			c.logger.Debug("command received", "kind", cmd.kind(), "command_id", cmd.id, "net_id", cmd.netID, "side", cmd.side)
			c.exec.submit(cmd)
		}
	}
}

// sendAcks is the stream's only sender after Hello (a gRPC stream allows one). An ack whose send
// fails goes back to the queue for the next stream.
func (c *Client) sendAcks(ctx context.Context, cancel context.CancelFunc, stream grpc.BidiStreamingClient[pb.NodeMessage, pb.ServerMessage]) {
	for {
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return
		case ack := <-c.acks:
			if err := stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Ack{Ack: ack}}); err != nil {
				select {
				case c.acks <- ack:
				default:
					c.logger.Warn("dropping an ack: the queue is full", "command_id", ack.GetCommandId())
				}
				c.logger.Debug("sending an ack failed", "error", err)
				cancel()
				return
			}
		}
	}
}

// runCommand is the executor's worker function: execute, then queue the ack.
func (c *Client) runCommand(ctx context.Context, cmd command) {
	ack := c.execute(ctx, cmd)
	select {
	case c.acks <- ack:
	case <-ctx.Done():
	}
}

func (c *Client) hello() *pb.Hello {
	cfg := c.agentConfig()
	var roles []string
	for _, r := range cfg.Roles() {
		if r != "server" {
			roles = append(roles, r)
		}
	}
	h := &pb.Hello{NodeName: cfg.NodeName, UnderlayAddr: cfg.AdvertiseAddr, Roles: roles,
		Version: version.Version, UnderlayMtu: uint32(c.nodeUnderlayMTU()), InstanceId: c.instance}
	for _, e := range c.activeEnds() {
		h.ActiveEnds = append(h.ActiveEnds, &pb.OverlayEndRef{NetId: e.NetID, Side: sideToProto(sideOf(e.Side))})
	}
	return h
}

// recoverer is implemented by overlays that can keep the ends an earlier run built
// (overlay.Manager); others only clean up.
type recoverer interface {
	Recover(ctx context.Context) ([]overlay.RecoveredEnd, []string, error)
}

// startupCleanup deals with what an earlier run of the agent left (a crash, kill -9, an
// upgrade): complete tunnel ends are kept, since the kernel kept carrying their connections
// while the agent was down, and go into the first Hello's active_ends for the server to judge
// (it keeps those it has sessions for and tears down the others); every other device nullnet
// owns is removed.
func (c *Client) startupCleanup(ctx context.Context) {
	var (
		removed []string
		err     error
	)
	if r, ok := c.overlay.(recoverer); ok {
		var kept []overlay.RecoveredEnd
		kept, removed, err = r.Recover(ctx)
		c.adoptEnds(kept)
		if len(kept) > 0 {
			c.logger.Info("kept tunnel ends an earlier run built; the server decides which stay", "count", len(kept))
			c.emit(events.Event{Kind: events.OverlayEndsRecovered,
				Message: fmt.Sprintf("kept %d tunnel ends an earlier run built", len(kept)),
				Fields:  map[string]string{"count": fmt.Sprint(len(kept))}})
		}
	} else {
		removed, err = c.overlay.Cleanup(ctx)
	}
	if err != nil {
		c.logger.Error("start-up cleanup of overlay devices failed", "error", err)
	}
	if len(removed) > 0 {
		c.emit(events.Event{Kind: events.OverlayLeftoversRemoved, Severity: events.Warning,
			Message: fmt.Sprintf("removed %d overlay devices left by an earlier run", len(removed)),
			Fields:  map[string]string{"count": fmt.Sprint(len(removed))}})
	}
	c.mu.Lock()
	c.cleanedUp = true
	c.mu.Unlock()
}

func (c *Client) setConnected(server string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.server = server
	if server != "" {
		c.connectedSince = time.Now()
	} else {
		c.connectedSince = time.Time{}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
