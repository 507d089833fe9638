package client

import (
	"context"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

// hostAddr is a non-loopback IPv4 address of this machine: what a node advertises.
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Fatal("this test needs a non-loopback IPv4 address on the machine (the node's advertise_addr)")
	return ""
}

// freePort returns a port free for TCP and UDP on every address, below the kernel's ephemeral
// range: a test that binds it seconds later (after watching a check fail) must not find it taken
// by some process's client socket, which the kernel only gives ports from that range.
func freePort(t *testing.T) int {
	t.Helper()
	first := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				first = n
			}
		}
	}
	for range 1000 {
		port := 10000 + rand.IntN(first-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		ln.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no port below the ephemeral range is free for both TCP and UDP")
	return 0
}

// checks returns the status and output of service id's checks by check ID.
func checks(t *testing.T, c *api.Client, id string) map[string]*api.AgentCheck {
	t.Helper()
	all, err := c.Agent().ChecksWithFilter("ServiceID == \"" + id + "\"")
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last state: %s", what, last)
}

func TestHostServicesInConsul(t *testing.T) {
	srv := consultest.Start(t)
	cc := srv.Client(t)
	addr := hostAddr(t)
	webPort, loPort := freePort(t), freePort(t)
	svc := func(name string, port int) config.HostService {
		return config.HostService{Name: name, Stack: "infra", Port: port, Protocol: "tcp", CheckInterval: time.Second}
	}
	cfg := &config.Config{NodeName: "nnov-node", AdvertiseAddr: addr, Client: config.Client{Enabled: true,
		Services: []config.HostService{svc("nnov-web", webPort), svc("nnov-lo", loPort)}}}

	c, err := New(Config{Agent: cfg, Consul: cc, Overlay: &fakeOverlay{j: &journal{}}, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		<-done
	})
	defer stop()
	webID, loID := ServiceID("nnov-node", "nnov-web"), ServiceID("nnov-node", "nnov-lo")

	// Registered under its name with nullnet's meta, and critical while nothing listens.
	eventually(t, "registration with a critical port check", func() (bool, string) {
		s, _, err := cc.Agent().Service(webID, nil)
		if err != nil {
			return false, err.Error()
		}
		ch := checks(t, cc, webID)
		port, lst := ch[webID+":port"], ch[webID+":listener"]
		ok := s.Service == "nnov-web" && s.Meta["nullnet-stack"] == "infra" && s.Meta["nullnet-node"] == "nnov-node" &&
			port != nil && port.Status == api.HealthCritical && port.Output != "" && lst != nil && strings.Contains(lst.Output, "nothing listens")
		return ok, describe(ch)
	})

	// A listener on all addresses makes both checks pass.
	web, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(webPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	go acceptAndClose(web)
	eventually(t, "passing checks once the port listens", func() (bool, string) {
		ch := checks(t, cc, webID)
		return ch[webID+":port"].Status == api.HealthPassing && ch[webID+":listener"].Status == api.HealthPassing, describe(ch)
	})

	// A 127.0.0.1-only listener: the port check (at advertise_addr) stays critical and the
	// listener check says why.
	lo, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(loPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	go acceptAndClose(lo)
	eventually(t, "loopback listener reported", func() (bool, string) {
		ch := checks(t, cc, loID)
		l := ch[loID+":listener"]
		return ch[loID+":port"].Status == api.HealthCritical && l.Status == api.HealthCritical &&
			strings.Contains(l.Output, "127.0.0.1") && strings.Contains(l.Output, "0.0.0.0"), describe(ch)
	})
	if st := c.Status().(Status); len(st.HostServices) != 2 || !st.HostServices[1].Registered {
		t.Fatalf("status host services: %+v", st.HostServices)
	}

	// SIGHUP without nnov-web: it is deregistered, nnov-lo stays.
	next := *cfg
	next.Client.Services = []config.HostService{svc("nnov-lo", loPort)}
	if err := c.Reload(&next); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deregistration after reload", func() (bool, string) {
		svcs, err := cc.Agent().Services()
		if err != nil {
			return false, err.Error()
		}
		_, web := svcs[webID]
		_, lo := svcs[loID]
		return !web && lo, "web registered=" + strconv.FormatBool(web)
	})

	// Shutdown deregisters everything.
	stop()
	svcs, err := cc.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for id := range svcs {
		if strings.HasPrefix(id, "nullnet-host-") {
			t.Fatalf("%s still registered after shutdown", id)
		}
	}
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func describe(ch map[string]*api.AgentCheck) string {
	var b strings.Builder
	for id, c := range ch {
		b.WriteString(id + "=" + c.Status + " (" + c.Output + "); ")
	}
	return b.String()
}

// TestUDPHostServiceHealth: a UDP service that never answers an empty datagram (as DNS servers
// do) is healthy once a socket is bound on the port on all addresses, and critical before.
func TestUDPHostServiceHealth(t *testing.T) {
	srv := consultest.Start(t)
	cc := srv.Client(t)
	port := freePort(t)
	svc := config.HostService{Name: "nnov-dns", Stack: "infra", Port: port, Protocol: "udp", CheckInterval: time.Second}
	cfg := &config.Config{NodeName: "nnov-udp", AdvertiseAddr: hostAddr(t), Client: config.Client{Enabled: true,
		Services: []config.HostService{svc}}}
	c, err := New(Config{Agent: cfg, Consul: cc, Overlay: &fakeOverlay{j: &journal{}}, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	id := ServiceID("nnov-udp", "nnov-dns")

	eventually(t, "a critical listener check and no UDP probe", func() (bool, string) {
		ch := checks(t, cc, id)
		l := ch[id+":listener"]
		return len(ch) == 1 && l != nil && l.Status == api.HealthCritical && strings.Contains(l.Output, "nothing listens"), describe(ch)
	})
	// A bound socket that never replies.
	conn, err := net.ListenPacket("udp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, "the service passing once a socket is bound", func() (bool, string) {
		hs, _, err := cc.Health().Service("nnov-dns", "", true, nil)
		return err == nil && len(hs) == 1, describe(checks(t, cc, id))
	})
}

// A stop with client.keep_tunnels_on_stop (SIGTERM, a restart) leaves the host services
// registered, so their replicas stay usable while the agent is away; the next run takes them
// over, and a stop after Leave (`nullnet leave`) deregisters them.
func TestHostServicesKeptOnStopRemovedOnLeave(t *testing.T) {
	srv := consultest.Start(t)
	cc := srv.Client(t)
	port := freePort(t)
	cfg := &config.Config{NodeName: "nnkp-node", AdvertiseAddr: hostAddr(t), Client: config.Client{Enabled: true,
		KeepTunnelsOnStop: true, Services: []config.HostService{{Name: "nnkp-web", Stack: "infra", Port: port,
			Protocol: "tcp", CheckInterval: time.Second}}}}
	id := ServiceID("nnkp-node", "nnkp-web")
	ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	// The replica must stay passing across the restart: a critical check would end its
	// sessions (replica_unhealthy). The new run registers it again; Consul keeps the status.
	passing := func() bool {
		ch := checks(t, cc, id)
		return len(ch) > 0 && ch[id+":port"] != nil && ch[id+":port"].Status == api.HealthPassing
	}
	registered := func() bool {
		svcs, err := cc.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		_, ok := svcs[id]
		return ok
	}
	run := func() (stop func(leave bool)) {
		c, err := New(Config{Agent: cfg, Consul: cc, Overlay: &fakeOverlay{j: &journal{}}, Logger: hclog.NewNullLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		eventually(t, "registered and passing", func() (bool, string) { return registered() && passing(), "not yet" })
		return func(leave bool) {
			if leave {
				c.Leave()
			}
			if got := c.KeepsOnStop(); got == leave {
				t.Fatalf("KeepsOnStop = %v after Leave=%v", got, leave)
			}
			cancel()
			<-done
		}
	}
	run()(false)
	if !registered() || !passing() {
		t.Fatalf("%s deregistered or not passing after a stop that keeps tunnels", id)
	}
	// Watch the check while the next run takes the registration over.
	stopWatch := make(chan struct{})
	flapped := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stopWatch:
				close(flapped)
				return
			default:
			}
			if !passing() {
				flapped <- describe(checks(t, cc, id))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	stop := run()
	time.Sleep(2 * time.Second) // a few check intervals
	close(stopWatch)
	if f, ok := <-flapped; ok {
		t.Fatalf("the check left passing while a new run took the registration over: %s", f)
	}
	stop(true)
	if registered() {
		t.Fatalf("%s still registered after a leave", id)
	}
}
