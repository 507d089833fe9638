package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/agent/server/certstore"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// certServer is a server role without Consul (certificates need none) and with TLS off, as
// on a trusted network: WatchCertificates is served over plaintext gRPC.
func certServer(t *testing.T, tune func(*config.Config)) *runningServer {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Enabled = true
	if tune != nil {
		tune(cfg)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.Info, Output: testWriter{t}})
	return runServer(t, server.Config{Agent: cfg, Events: events.New(1000, logger), Logger: logger})
}

// TestWatchCertificatesSlowConsumer: a subscriber that stops reading loses its stream after the
// send bound, while another subscriber gets every change at once. A subscriber that arrives
// later gets the current set first.
func TestWatchCertificatesSlowConsumer(t *testing.T) {
	rs := certServer(t, nil)
	server.SetCertSendTimeout(rs.srv, time.Second)
	store := rs.srv.Certificates()
	ca := certstoretest.NewCA(t)
	chain, key := ca.Valid(t, 30, "*.bulk.example")
	// About 6 MB per bundle: far beyond what HTTP/2 flow control lets through unread.
	big := map[string]certstore.Certificate{}
	for i := range 4000 {
		big[fmt.Sprintf("d%04d.bulk.example", i)] = certstore.Certificate{CertPEM: chain, KeyPEM: key, NotAfter: time.Now().Add(time.Hour)}
	}
	store.SetSource("test", big)

	client := pb.NewIngressClient(rs.conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recvOpt := grpc.MaxCallRecvMsgSize(64 << 20)
	slow, err := client.WatchCertificates(ctx, &pb.WatchCertificatesRequest{ProxyNode: "slow"}, recvOpt)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := client.WatchCertificates(ctx, &pb.WatchCertificatesRequest{ProxyNode: "fast"}, recvOpt)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 100)
	go func() {
		for {
			b, err := fast.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- b.GetVersion()
		}
	}()
	waitVersion := func(want uint64) time.Duration {
		t.Helper()
		start := time.Now()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case v, ok := <-got:
				if !ok {
					t.Fatal("fast subscriber's stream ended")
				}
				if v >= want {
					return time.Since(start)
				}
			case <-timeout:
				t.Fatalf("fast subscriber did not get version %d", want)
			}
		}
	}
	b, _ := store.Snapshot()
	waitVersion(b.GetVersion())
	for i := range 5 {
		store.SetHTTPChallenge(fmt.Sprintf("tok%d", i), "auth")
		b, _ := store.Snapshot()
		took := waitVersion(b.GetVersion())
		t.Logf("version %d (%d certificates, %d KiB) reached the fast subscriber in %s", b.GetVersion(),
			len(b.GetCertificates()), len(chain)*len(b.GetCertificates())>>10, took.Round(time.Millisecond))
	}
	// The slow subscriber now reads: what it was sent, then the end of its stream.
	time.Sleep(1500 * time.Millisecond)
	var last error
	for n := 0; n < 10; n++ {
		if _, last = slow.Recv(); last != nil {
			break
		}
	}
	if status.Code(last) != codes.DeadlineExceeded || !strings.Contains(last.Error(), "was not taken within 1s") {
		t.Fatalf("slow subscriber: %v, want DeadlineExceeded", last)
	}

	// A new subscriber gets the current set at once.
	late, err := client.WatchCertificates(ctx, &pb.WatchCertificatesRequest{}, recvOpt)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := late.Recv()
	cur, _ := store.Snapshot()
	if err != nil || lb.GetVersion() != cur.GetVersion() || len(lb.GetHttpChallenges()) != 5 || len(lb.GetCertificates()) != 4000 {
		t.Fatalf("late subscriber: %v, version %d of %d", err, lb.GetVersion(), cur.GetVersion())
	}
}

// TestWatchCertificatesNeedsMutualTLS: a server with TLS but without verify_incoming cannot tell
// a proxy from anyone else, so it refuses to hand out private keys.
func TestWatchCertificatesNeedsMutualTLS(t *testing.T) {
	rs := certServer(t, func(c *config.Config) {
		c.TLS.CertFile, c.TLS.KeyFile = "/unused/cert.pem", "/unused/key.pem" // the harness serves plaintext
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := pb.NewIngressClient(rs.conn).WatchCertificates(ctx, &pb.WatchCertificatesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "verify_incoming") {
		t.Fatalf("got %v, want PermissionDenied naming verify_incoming", err)
	}
	// An invalid proxy_node is refused before anything else.
	stream, err = pb.NewIngressClient(rs.conn).WatchCertificates(ctx, &pb.WatchCertificatesRequest{ProxyNode: "bad name!"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad proxy_node: %v", err)
	}
}
