package server_test

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
)

const directStack = `stack "nnss" {
  service "web" {
    timeout = "2s"
  }
  service "db" {
    protocol    = "tcp"
    listen_port = 15432
    timeout     = 0
  }
  service "backend" {}
}
`

// network = "direct": no tunnel, the upstream is the replica itself, and sessions, statuses,
// use counting, events and the API behave as with tunnels.
func TestProxy_Direct(t *testing.T) {
	e := newPlaneEnv(t, config.NetworkDirect, directStack, nil)
	e.waitDefined("web", "proxy-1")

	t.Run("statuses", func(t *testing.T) {
		cases := []struct {
			name, client, service, node string
			want                        codes.Code
		}{
			{"unknown service", "203.0.113.1", "nope", "proxy-1", codes.NotFound},
			{"backend only", "203.0.113.1", "backend", "proxy-1", codes.FailedPrecondition},
			{"bad client ip", "not-an-ip", "web", "proxy-1", codes.InvalidArgument},
			{"no proxy node", "203.0.113.1", "web", "", codes.InvalidArgument},
			{"no replica", "203.0.113.1", "web", "proxy-1", codes.Unavailable},
		}
		for _, c := range cases {
			_, err := e.proxy(c.client, c.service, c.node)
			if code(err) != c.want {
				t.Errorf("%s: got %v, want %s", c.name, err, c.want)
			}
		}
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	port := ln.Addr().(*net.TCPAddr).Port
	e.registerReplica("web-1", "web", "node-a", "127.0.0.1", port)

	var first *pb.ProxyResponse
	eventually(t, 30*time.Second, "a replica", func() bool {
		first, err = e.proxy("203.0.113.7", "web", "proxy-1")
		return err == nil
	})
	if first.UpstreamIp != "127.0.0.1" || int(first.UpstreamPort) != port || first.Reused || first.NetId != 0 {
		t.Fatalf("first call: %+v", first)
	}
	c, err := net.Dial("tcp", net.JoinHostPort(first.UpstreamIp, strconv.Itoa(int(first.UpstreamPort))))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	c.Close()

	second, err := e.proxy("203.0.113.7", "web", "proxy-1")
	if err != nil || !second.Reused || second.SessionId != first.SessionId || second.LeaseId == first.LeaseId {
		t.Fatalf("second call: %+v %v", second, err)
	}

	t.Run("idle timeout counts from the last release", func(t *testing.T) {
		time.Sleep(3 * time.Second) // longer than the 2 s timeout, with two uses open
		if got := e.sessions(); len(got) != 1 || got[0]["state"] != "active" {
			t.Fatalf("sessions with open uses: %v", got)
		}
		e.release(first.LeaseId, "proxy-1")
		time.Sleep(2500 * time.Millisecond)
		if got := e.sessions(); len(got) != 1 {
			t.Fatalf("session with one use left expired: %v", got)
		}
		released := time.Now()
		e.release(second.LeaseId, "proxy-1")
		eventually(t, 10*time.Second, "idle teardown", func() bool { return len(e.sessions()) == 0 })
		if d := time.Since(released); d < 2*time.Second || d > 6*time.Second {
			t.Errorf("torn down %s after the last release, want about 2s", d)
		}
		td := e.eventsOf(events.SessionTornDown)
		if len(td) != 1 || td[0].Fields["reason"] != "idle_timeout" {
			t.Fatalf("torn-down events: %+v", td)
		}
	})

	t.Run("concurrent calls share one session", func(t *testing.T) {
		var wg sync.WaitGroup
		ids := make([]string, 50)
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := e.proxy("203.0.113.8", "web", "proxy-1")
				if err != nil {
					t.Errorf("call %d: %v", i, err)
					return
				}
				ids[i] = r.SessionId
			}()
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("sessions differ: %v", ids)
			}
		}
		if n := len(e.sessions()); n != 1 {
			t.Fatalf("%d sessions, want 1", n)
		}
	})

	t.Run("unhealthy replica tears down", func(t *testing.T) {
		e.setHealth("web-1", "critical")
		eventually(t, 30*time.Second, "teardown", func() bool { return len(e.sessions()) == 0 })
		td := e.eventsOf(events.SessionTornDown)
		if r := td[len(td)-1].Fields["reason"]; r != "replica_unhealthy" {
			t.Fatalf("reason = %s", r)
		}
		if len(e.eventsOf(events.ReplicaRemoved)) == 0 {
			t.Fatal("no replica_removed event")
		}
		if _, err := e.proxy("203.0.113.8", "web", "proxy-1"); code(err) != codes.Unavailable {
			t.Fatalf("with no healthy replica: %v", err)
		}
		e.setHealth("web-1", "passing")
		eventually(t, 30*time.Second, "replica back", func() bool {
			_, err := e.proxy("203.0.113.9", "web", "proxy-1")
			return err == nil
		})
	})

	t.Run("forced delete through the API", func(t *testing.T) {
		s := e.sessions()
		if len(s) != 1 {
			t.Fatalf("sessions: %v", s)
		}
		id := s[0]["id"].(string)
		req, _ := http.NewRequest(http.MethodDelete, e.http.URL+"/v1/sessions/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE: %v %v", resp, err)
		}
		resp.Body.Close()
		eventually(t, 10*time.Second, "forced teardown", func() bool { return len(e.sessions()) == 0 })
		resp, _ = http.DefaultClient.Do(req)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("second DELETE: %d", resp.StatusCode)
		}
		resp.Body.Close()
	})

	t.Run("events API blocks", func(t *testing.T) {
		idx := e.events.Index()
		got := make(chan int, 1)
		go func() {
			resp, err := http.Get(fmt.Sprintf("%s/v1/events?index=%d&wait=20s", e.http.URL, idx))
			if err != nil {
				got <- -1
				return
			}
			resp.Body.Close()
			n, _ := strconv.Atoi(resp.Header.Get("X-Nullnet-Index"))
			got <- n
		}()
		time.Sleep(200 * time.Millisecond)
		select {
		case n := <-got:
			t.Fatalf("returned before any new event (index %d)", n)
		default:
		}
		e.events.Emit(events.Event{Kind: events.ConfigReloaded})
		select {
		case n := <-got:
			if uint64(n) <= idx {
				t.Fatalf("index %d, want > %d", n, idx)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("blocking query did not return after an event")
		}
	})
}

// A replica registered a moment before its first client serves that client: the watcher reads
// a service it believes empty once more before refusing (the names and checks watches lag by
// up to half a second by design).
func TestProxy_ReplicaRegisteredJustBefore(t *testing.T) {
	e := newPlaneEnv(t, config.NetworkDirect, directStack, nil)
	e.waitDefined("web", "proxy-1")
	time.Sleep(time.Second) // the watcher has settled on "web has no instance"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	e.registerReplica("web-1", "web", "node-a", "127.0.0.1", ln.Addr().(*net.TCPAddr).Port)
	if _, err := e.proxy("203.0.113.9", "web", "proxy-1"); err != nil {
		t.Fatalf("first client right after the replica registered: %v", err)
	}
}
