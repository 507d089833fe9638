package anchor

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nullnet/nullnet/scripts/bench/internal/load"
)

// The rendered configurations must start the real HAProxy and nginx and relay TCP (and UDP for
// nginx); otherwise `make bench` silently loses its anchors.
func TestAnchorsRelay(t *testing.T) {
	if err := Installed(); err != nil {
		t.Fatal(err)
	}
	rr, err := load.StartTCPResponder("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	echo, err := load.StartUDPEcho("127.0.0.1:0", 1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cases := []struct {
		name  string
		start func(dir string, routes []Route) (*Relay, error)
		udp   bool
	}{
		{"haproxy", func(dir string, routes []Route) (*Relay, error) {
			return StartHAProxy(ctx, Options{Dir: dir, NoFile: 4096}, routes)
		}, false},
		{"nginx", func(dir string, routes []Route) (*Relay, error) {
			return StartNginx(ctx, Options{Dir: dir, NoFile: 4096}, routes)
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			routes := []Route{{Protocol: "tcp", Listen: freeAddr(t), Backend: rr.Addr()}}
			if c.udp {
				routes = append(routes, Route{Protocol: "udp", Listen: freeAddr(t), Backend: echo.Addr()})
			}
			relay, err := c.start(t.TempDir(), routes)
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Stop(5 * time.Second)
			r := load.ConnRate(ctx, routes[0].Listen, 1, 200*time.Millisecond)
			if r.Ops == 0 || r.Errors != 0 {
				t.Fatalf("through %s: ops=%d errors=%d", c.name, r.Ops, r.Errors)
			}
			if c.udp {
				u, err := load.UDPRoundTrips(ctx, routes[1].Listen, 1, 1, 64, 500*time.Millisecond)
				if err != nil || u.Ops == 0 {
					t.Fatalf("UDP through %s: %+v %v", c.name, u, err)
				}
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
