package servers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/server/leader"
	"github.com/nullnet/nullnet/agent/server/servers"
)

func register(t *testing.T, c *api.Client, name string, grpc int) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "nullnet-" + name, Name: "nullnet", Tags: []string{"server"}, Port: grpc, Address: "127.0.0.1",
		Meta: map[string]string{"nullnet-node": name, "nullnet-grpc-port": fmt.Sprint(grpc),
			"nullnet-http-port": fmt.Sprint(grpc + 1), "nullnet-version": "0.1.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func waitList(t *testing.T, c *api.Client, key string, ok func([]servers.Server) bool) []servers.Server {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, _, err := servers.List(context.Background(), c, key)
		if err == nil && ok(list) {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers: %+v %v", list, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestListWithLeader(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	register(t, c, "srv-a", 7400)
	register(t, c, "srv-b", 7500)
	// A client agent's registration (no "server" tag) is not listed.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "nullnet-cl", Name: "nullnet", Tags: []string{"client"}}); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("nullnet-test/servers-%d", time.Now().UnixNano())
	list := waitList(t, c, key, func(l []servers.Server) bool { return len(l) == 2 })
	if list[0].Name != "srv-a" || list[0].GRPCPort != 7400 || list[0].HTTPPort != 7401 || list[0].Health != api.HealthPassing || list[0].Leader || list[1].Leader {
		t.Fatalf("without a leader: %+v", list)
	}
	l, err := leader.New(leader.Config{Client: c, Key: key, Name: "srv-b"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	list = waitList(t, c, key, func(l []servers.Server) bool { return len(l) == 2 && l[1].Leader })
	if list[0].Leader {
		t.Fatalf("two leaders: %+v", list)
	}
}

// Today's mirror takes the lock with a plain api.Lock (no value): the leader is found by its
// Consul node when one server runs there.
func TestListWithPlainAPILock(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	register(t, c, "only", 7400)
	key := fmt.Sprintf("nullnet-test/servers-plain-%d", time.Now().UnixNano())
	lock, err := c.LockOpts(&api.LockOptions{Key: key, SessionName: "nullnet leader"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Lock(nil); err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	waitList(t, c, key, func(l []servers.Server) bool { return len(l) == 1 && l[0].Leader && l[0].ConsulNode == "consultest" })
}
