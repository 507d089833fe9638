package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// TestAuthRefusalsAggregated: 6,000 gRPC calls without a client certificate, from two
// addresses, leave a bounded number of auth_refused events (and WARN lines) in the ring, whose
// counts add up to the calls of each address; the ring keeps room for everything else.
func TestAuthRefusalsAggregated(t *testing.T) {
	saved := aggregateInterval
	aggregateInterval = 500 * time.Millisecond
	defer func() { aggregateInterval = saved }()

	a := startTLSTestAgent(t, hclog.Info)
	p, logs := a.pki, a.logs

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.ca.CertPEM)
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool}) // verifies the server, presents nothing
	const perPeer = 3000
	start := time.Now()
	var wg sync.WaitGroup
	for _, src := range []string{"127.0.0.1", "127.0.0.2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			cc, err := grpc.NewClient(a.grpcLn.Addr().String(), grpc.WithTransportCredentials(creds),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					return d.DialContext(ctx, "tcp", addr)
				}))
			if err != nil {
				t.Error(err)
				return
			}
			defer cc.Close()
			c := pb.NewControlClient(cc)
			for i := 0; i < perPeer; i++ {
				_, err := c.ReportEvent(context.Background(), &pb.AgentEvent{Kind: "x"})
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("call %d from %s: %v, want Unauthenticated", i, src, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	time.Sleep(2 * aggregateInterval) // the last summaries

	evs, _ := a.events.Since(0)
	counts := map[string]int{}
	refusals := 0
	for _, e := range evs {
		if e.Kind != events.AuthRefused {
			continue
		}
		refusals++
		n, err := strconv.Atoi(e.Fields["count"])
		if err != nil {
			t.Fatalf("auth_refused without a count: %+v", e)
		}
		counts[e.Fields["peer"]] += n
	}
	for _, src := range []string{"127.0.0.1", "127.0.0.2"} {
		if counts[src] != perPeer {
			t.Errorf("peer %s: counted %d refusals, want %d", src, counts[src], perPeer)
		}
	}
	bound := 2 * (2 + int(took/aggregateInterval) + 2)
	warns := strings.Count(logs.String(), "kind=auth_refused")
	t.Logf("%d refused calls in %v -> %d auth_refused events, %d log lines", 2*perPeer, took.Round(time.Millisecond), refusals, warns)
	if refusals > bound || warns > bound {
		t.Fatalf("%d events and %d log lines for %d refusals; want at most %d", refusals, warns, 2*perPeer, bound)
	}
}
