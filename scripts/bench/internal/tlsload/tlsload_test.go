package tlsload

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"
)

// A TLS-terminating Go server in front of the backend stands in for a relay: both generators
// must count what completed and nothing else.
func TestGeneratorsAgainstTLSServer(t *testing.T) {
	dir := t.TempDir()
	cert, err := WriteCertificate(dir, "bench.example")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cert.Combined, cert.Combined); err != nil {
		t.Fatalf("combined PEM: %v", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	backend, err := StartBackend("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, BodySize))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	ctx := context.Background()
	h := Handshakes(ctx, ln.Addr().String(), "bench.example", 2, 300*time.Millisecond)
	if h.Ops == 0 || h.Errors != 0 {
		t.Fatalf("handshakes: %+v", h)
	}
	k := KeepAliveRequests(ctx, ln.Addr().String(), "bench.example", 2, 300*time.Millisecond)
	if k.Ops < h.Ops/2 || k.Errors != 0 {
		t.Fatalf("keep-alive requests %+v vs handshakes %+v", k, h)
	}
	// Nothing listening: every attempt is an error, none an operation.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	if r := Handshakes(ctx, dead, "bench.example", 1, 100*time.Millisecond); r.Ops != 0 || r.Errors == 0 {
		t.Fatalf("dead address: %+v", r)
	}
}
