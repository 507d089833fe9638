package consultest

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// TestHarnessBlockingQuery proves the harness: a real agent, a service registered with meta
// through consul/api, read back with a blocking query that wakes on the change.
func TestHarnessBlockingQuery(t *testing.T) {
	srv := Start(t)
	c := srv.Client(t)

	_, meta, err := c.Catalog().Service("redis", "", nil)
	if err != nil {
		t.Fatalf("initial read: %v", err)
	}
	idx := meta.LastIndex

	type result struct {
		svcs []*api.CatalogService
		idx  uint64
		err  error
	}
	got := make(chan result, 1)
	start := time.Now()
	go func() {
		svcs, m, err := c.Catalog().Service("redis", "", &api.QueryOptions{WaitIndex: idx, WaitTime: 10 * time.Second})
		var i uint64
		if m != nil {
			i = m.LastIndex
		}
		got <- result{svcs, i, err}
	}()

	time.Sleep(200 * time.Millisecond) // let the query block first
	reg := &api.AgentServiceRegistration{ID: "redis-1", Name: "redis", Port: 6379,
		Meta: map[string]string{"nullnet-stack": "my-app", "nullnet-protocol": "tcp"}}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register: %v", err)
	}

	r := <-got
	if r.err != nil {
		t.Fatalf("blocking query: %v", r.err)
	}
	if time.Since(start) > 9*time.Second {
		t.Fatalf("blocking query did not wake on the change (took %s)", time.Since(start))
	}
	if r.idx <= idx {
		t.Fatalf("index did not advance: %d -> %d", idx, r.idx)
	}
	if len(r.svcs) != 1 {
		t.Fatalf("want 1 instance, got %d", len(r.svcs))
	}
	s := r.svcs[0]
	if s.ServiceID != "redis-1" || s.ServicePort != 6379 || s.ServiceMeta["nullnet-stack"] != "my-app" || s.ServiceMeta["nullnet-protocol"] != "tcp" {
		t.Fatalf("unexpected instance: %+v", s)
	}
}

// freePorts hands out distinct ports that are free on both TCP and UDP (Consul's serf and DNS
// ports take both).
func TestFreePortsTCPAndUDP(t *testing.T) {
	ports, err := freePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d handed out twice: %v", p, ports)
		}
		seen[p] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("tcp %s: %v", addr, err)
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("udp %s: %v", addr, err)
		}
		u.Close()
	}
}
