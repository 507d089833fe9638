package client

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/protobuf/proto"
)

// FuzzServerCommands: whatever a server sends on the control channel, the node's handling of it
// (decoding, command extraction, validation, setup parameters, the ack and the bookkeeping of its
// ends) never panics; every command gets an ack carrying its id; an invalid command never
// reaches the overlay; and the node records an end only for a setup the overlay performed.
func FuzzServerCommands(f *testing.F) {
	for _, m := range []*pb.ServerMessage{
		{Msg: &pb.ServerMessage_OverlaySetup{OverlaySetup: &pb.OverlaySetup{CommandId: "c1", NetId: 101,
			Side: pb.OverlaySide_OVERLAY_SIDE_SERVICE, LocalUnderlay: "10.0.0.1", RemoteUnderlay: "10.0.0.2", Mtu: 1450, Service: "web"}}},
		{Msg: &pb.ServerMessage_OverlaySetup{OverlaySetup: &pb.OverlaySetup{CommandId: "c2", NetId: 2097151,
			Side: pb.OverlaySide_OVERLAY_SIDE_PROXY, RemoteUnderlay: "::1"}}},
		{Msg: &pb.ServerMessage_OverlayTeardown{OverlayTeardown: &pb.OverlayTeardown{CommandId: "c3", NetId: 101,
			Side: pb.OverlaySide_OVERLAY_SIDE_PROXY, Reason: "idle_timeout"}}},
		{Msg: &pb.ServerMessage_OverlayTeardown{OverlayTeardown: &pb.OverlayTeardown{CommandId: "c4", NetId: 7}}},
		{Msg: &pb.ServerMessage_Welcome{Welcome: &pb.Welcome{ServerName: "s"}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.ServerMessage
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		fo := &fakeOverlay{j: &journal{}}
		c, err := New(Config{Agent: &config.Config{NodeName: "n1", AdvertiseAddr: "10.0.0.1"}, Overlay: fo,
			Logger: hclog.NewNullLogger()})
		if err != nil {
			t.Fatal(err)
		}
		cmd, ok := commandFrom(&m)
		ack, err := c.Execute(context.Background(), &m)
		if !ok {
			if err == nil {
				t.Fatalf("%v is no command, yet Execute accepted it", &m)
			}
			return
		}
		if err != nil || ack == nil {
			t.Fatalf("command %v: no ack (%v)", &m, err)
		}
		if ack.CommandId != cmd.id {
			t.Fatalf("ack for %q carries id %q", cmd.id, ack.CommandId)
		}
		invalid := cmd.validate() != nil
		if invalid && (ack.Error == "" || len(fo.journalSnapshot()) != 0) {
			t.Fatalf("invalid command %v: ack %v, overlay calls %v", &m, ack, fo.journalSnapshot())
		}
		ends := c.activeEnds()
		if cmd.setup != nil && ack.Error == "" {
			if len(ends) != 1 || ends[0].NetID != cmd.netID || sideOf(ends[0].Side) != cmd.side {
				t.Fatalf("setup %v acked, ends %v", &m, ends)
			}
			if err := overlay.ValidateNetID(ends[0].NetID); err != nil {
				t.Fatalf("recorded an end with %v", err)
			}
		} else if len(ends) != 0 {
			t.Fatalf("%v (ack %v) left ends %v", &m, ack, ends)
		}
	})
}

func (f *fakeOverlay) journalSnapshot() []string { return f.j.list() }
