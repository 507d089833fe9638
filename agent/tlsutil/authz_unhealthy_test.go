package tlsutil

import (
	"context"
	"testing"
	"time"

	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
)

// WatchUnhealthyReplicas is a proxy's stream like WatchPortMappings: a proxy certificate gets
// through (to the handler, here unimplemented), as itself only; a client certificate does not.
func TestMutualTLSWatchUnhealthyReplicas(t *testing.T) {
	p := newPKI(t)
	var refused []string
	addr := startServer(t, p, &refused)
	watch := func(role, cert, node string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := pb.NewIngressClient(dial(t, addr, p.issue(t, role, cert))).
			WatchUnhealthyReplicas(ctx, &pb.WatchUnhealthyReplicasRequest{ProxyNode: node})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	wantCode(t, watch(RoleProxy, "edge1", ""), codes.Unimplemented, "")
	wantCode(t, watch(RoleProxy, "edge1", "edge2"), codes.PermissionDenied, `proxy_node "edge2" does not match`)
	wantCode(t, watch(RoleClient, "node1", ""), codes.PermissionDenied, "lacks the proxy role")
	if len(refused) != 2 {
		t.Fatalf("refusals %v", refused)
	}
}
