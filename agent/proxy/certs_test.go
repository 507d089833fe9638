package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	nnserver "github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// certServerOn runs a real server role (no Consul: certificates need none; TLS off) whose
// certs_dir is dir, serving gRPC on addr ("" = any port). stop ends it as a crash would.
func certServerOn(t *testing.T, addr, dir string) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cfg := config.Default()
	cfg.Server.Enabled = true
	cfg.Server.CertsDir = dir
	logger := hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.Info, Output: testWriter{t}})
	srv, err := nnserver.New(nnserver.Config{Agent: cfg, Events: events.New(100, logger), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	for deadline := time.Now().Add(5 * time.Second); ; { // the old server's port may linger a moment
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.RegisterGRPC(g)
	go func() { _ = g.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			g.Stop()
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// TestCertificatesSurviveServerRestart: the proxy keeps serving its certificates while the
// server is gone, reconnects on its own and takes the restarted server's set; a bad entry
// never hides the good ones.
func TestCertificatesSurviveServerRestart(t *testing.T) {
	ca := certstoretest.NewCA(t)
	dir1, dir2 := t.TempDir(), t.TempDir()
	c1, k1 := ca.Valid(t, 30, "a.example.com")
	certstoretest.WritePair(t, dir1, "a.example.com", c1, k1)
	c2, k2 := ca.Valid(t, 30, "a.example.com")
	certstoretest.WritePair(t, dir2, "a.example.com", c2, k2)
	b, bk := ca.Valid(t, 30, "b.example.com")
	certstoretest.WritePair(t, dir2, "b.example.com", b, bk)

	addr, stop := certServerOn(t, "", dir1)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tp := startProxy(t, newTestResolver(), func(_ *config.Config, c *Config) { c.Conn = conn; c.Resolver = nil })
	leaf := func(chain, key []byte) []byte {
		pair, err := tls.X509KeyPair(chain, key)
		if err != nil {
			t.Fatal(err)
		}
		return pair.Certificate[0]
	}
	serves := func(name string, want []byte) func() bool {
		return func() bool {
			c, ok := tp.Certificates().Current().Lookup(name)
			return ok && bytes.Equal(c.Certificate[0], want)
		}
	}
	waitFor(t, 10*time.Second, "the first set", serves("a.example.com", leaf(c1, k1)))

	stop()
	time.Sleep(500 * time.Millisecond) // the stream is lost meanwhile
	if !serves("a.example.com", leaf(c1, k1))() {
		t.Fatal("the proxy dropped its certificates when the server went away")
	}
	start := time.Now()
	certServerOn(t, addr, dir2)
	waitFor(t, 15*time.Second, "the restarted server's set", serves("a.example.com", leaf(c2, k2)))
	t.Logf("reconnected and replaced in %s", time.Since(start).Round(time.Millisecond))
	if !serves("b.example.com", leaf(b, bk))() {
		t.Fatal("b.example.com missing")
	}
}
