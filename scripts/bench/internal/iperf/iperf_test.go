package iperf

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"
)

// One short run against a real iperf3 server: the JSON we read must still be iperf3's.
func TestRunReadsServerSide(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Fatal("iperf3 is not installed: run scripts/setup (make test does), or apt-get install -y iperf3")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := StartServer(ctx, t.TempDir(), port)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(2 * time.Second)
	r, err := Run(ctx, "127.0.0.1", port, 2, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.BitsPerSecond <= 0 || r.Bytes <= 0 || r.Elapsed <= 0 {
		t.Fatalf("empty result %+v", r)
	}
	if _, err := Run(ctx, "127.0.0.1", 1, 1, time.Second); err == nil {
		t.Error("want an error when nothing listens")
	}
}
