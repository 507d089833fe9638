package anchor

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/proc"
	"github.com/nullnet/nullnet/scripts/bench/internal/tlsload"
)

// Both anchors really terminate TLS for the bench's certificate and forward to the backend:
// the generators complete handshakes and requests through each, with no errors.
func TestTLSAnchorsTerminate(t *testing.T) {
	if err := Installed(); err != nil {
		t.Fatal(err)
	}
	backend, err := tlsload.StartBackend("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	for _, name := range []string{"haproxy", "nginx"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cert, err := tlsload.WriteCertificate(dir, "bench.example")
			if err != nil {
				t.Fatal(err)
			}
			port, err := proc.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			listen := "127.0.0.1:" + strconv.Itoa(port)
			routes := []TLSRoute{{Listen: listen, Backend: backend.Addr(), CertFile: cert.CertFile, KeyFile: cert.KeyFile, Combined: cert.Combined}}
			o := Options{Dir: dir, NoFile: 4096}
			start := StartHAProxyTLS
			if name == "nginx" {
				start = StartNginxTLS
			}
			relay, err := start(context.Background(), o, routes)
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Stop(2 * time.Second)
			ctx := context.Background()
			if r := tlsload.Handshakes(ctx, listen, "bench.example", 2, 300*time.Millisecond); r.Ops == 0 || r.Errors != 0 {
				t.Fatalf("handshakes through %s: %+v\n%s", name, r, relay.LogTail(800))
			}
			if r := tlsload.KeepAliveRequests(ctx, listen, "bench.example", 2, 300*time.Millisecond); r.Ops == 0 || r.Errors != 0 {
				t.Fatalf("requests through %s: %+v\n%s", name, r, relay.LogTail(800))
			}
		})
	}
}
