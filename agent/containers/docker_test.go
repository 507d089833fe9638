package containers

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/nullnet/nullnet/agent/containers/containertest"
)

// logBuffer captures warnings so the test can count them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	os.Stderr.Write(p)
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitService polls Consul's health view of service until ok accepts it; returns how long it took.
func waitService(t *testing.T, c *api.Client, service string, ok func([]*api.ServiceEntry) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	var last []*api.ServiceEntry
	for time.Now().Before(deadline) {
		entries, _, err := c.Health().Service(service, "", false, nil)
		if err == nil {
			last = entries
			if ok(entries) {
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, e := range last {
		t.Logf("entry %s addr=%s port=%d meta=%v status=%s", e.Service.ID, e.Service.Address, e.Service.Port, e.Service.Meta, e.Checks.AggregatedStatus())
	}
	t.Fatalf("service %s never reached the expected state in Consul", service)
	return 0
}

func TestContainerReplicasInConsul(t *testing.T) {
	env := containertest.New(t)
	srv := consultest.Start(t)
	cc := srv.Client(t)
	logs := &logBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "containers", Level: hclog.Debug, Output: logs})

	svc := "echo-" + env.Run
	named := "named-" + env.Run
	namedSvc := "named-echo-" + env.Run
	w, err := New(Config{Logger: logger, Named: map[string]Spec{named: {Service: namedSvc, Port: 7000}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	node := "node-" + env.Run
	reg := &Registrar{Consul: cc, Node: node, Watcher: w, Logger: logger}
	done := make(chan struct{})
	go func() { defer close(done); reg.Run(ctx, func() bool { return false }) }()

	// A labelled container appears, passing, at its bridge address.
	t0 := time.Now()
	name, id := env.Start("echo", "nullnet.service="+svc, "nullnet.port=7000", "nullnet.stack=s1")
	cliDone := time.Since(t0)
	ip := env.IP(name)
	waitService(t, cc, svc, func(es []*api.ServiceEntry) bool {
		return len(es) == 1 && es[0].Checks.AggregatedStatus() == api.HealthPassing
	})
	runToPassing := time.Since(t0)
	es, _, _ := cc.Health().Service(svc, "", false, nil)
	s := es[0].Service
	if s.ID != ServiceID(node, id) || s.Address != ip || s.Port != 7000 || s.Meta[MetaContainer] != name ||
		s.Meta[MetaNode] != node || s.Meta[MetaStack] != "s1" || s.Meta[MetaProtocol] != "tcp" {
		t.Fatalf("registration = id %s addr %s port %d meta %v; want id %s addr %s", s.ID, s.Address, s.Port, s.Meta, ServiceID(node, id), ip)
	}
	t.Logf("docker run -> passing in Consul: %v (the docker run command itself took %v)", runToPassing, cliDone)
	// The registered address is dialable from the host (what network = "direct" proxies do).
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(s.Address, strconv.Itoa(s.Port)), 2*time.Second)
	if err != nil {
		t.Fatalf("dialing the registered address: %v", err)
	}
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	conn.Write([]byte("ping\n"))
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if line != "ping\n" {
		t.Fatalf("echo through the registered address = %q, %v", line, err)
	}

	// Paused: still passing, marked suspended.
	env.Docker("pause", name)
	t.Logf("docker pause -> suspended meta: %v", waitService(t, cc, svc, func(es []*api.ServiceEntry) bool {
		return len(es) == 1 && es[0].Checks.AggregatedStatus() == api.HealthPassing && es[0].Service.Meta[MetaSuspended] == "true"
	}))
	env.Docker("unpause", name)
	waitService(t, cc, svc, func(es []*api.ServiceEntry) bool {
		return len(es) == 1 && es[0].Service.Meta[MetaSuspended] == ""
	})

	// A container named in the config, without labels.
	nname, _ := env.Start("named")
	if nname != named {
		t.Fatalf("named container %s != %s", nname, named)
	}
	waitService(t, cc, namedSvc, func(es []*api.ServiceEntry) bool {
		return len(es) == 1 && es[0].Checks.AggregatedStatus() == api.HealthPassing && es[0].Service.Meta[MetaContainer] == named
	})

	// Bad labels: skipped with one warning, no crash, nothing registered.
	bad, _ := env.Start("bad", "nullnet.service=bad-"+env.Run, "nullnet.port=http")
	env.Docker("restart", "-t", "0", bad) // more events for the same container: still one warning
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) &&
		!strings.Contains(logs.String(), "container skipped: bad nullnet labels"); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the restart's events are handled by now
	if n := strings.Count(logs.String(), "container skipped: bad nullnet labels"); n != 1 {
		t.Fatalf("bad-label warnings = %d, want 1", n)
	}
	if es, _, _ := cc.Health().Service("bad-"+env.Run, "", false, nil); len(es) != 0 {
		t.Fatalf("bad-labelled container registered: %v", es[0].Service)
	}

	// Stopped: critical. Removed: deregistered.
	env.Docker("stop", "-t", "0", name)
	t.Logf("docker stop -> critical: %v", waitService(t, cc, svc, func(es []*api.ServiceEntry) bool {
		return len(es) == 1 && es[0].Checks.AggregatedStatus() == api.HealthCritical
	}))
	t1 := time.Now()
	env.Docker("rm", name)
	waitService(t, cc, svc, func(es []*api.ServiceEntry) bool { return len(es) == 0 })
	t.Logf("docker rm -> deregistered: %v", time.Since(t1))

	// An agent restart re-adopts what runs: a new watcher + registrar keep the same ID.
	cancel()
	<-done
	waitService(t, cc, namedSvc, func(es []*api.ServiceEntry) bool { return len(es) == 0 }) // keep=false deregistered
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	w2, _ := New(Config{Logger: logger, Named: map[string]Spec{named: {Service: namedSvc, Port: 7000}}})
	go w2.Run(ctx2)
	reg2 := &Registrar{Consul: cc, Node: node, Watcher: w2, Logger: logger}
	done2 := make(chan struct{})
	go func() { defer close(done2); reg2.Run(ctx2, func() bool { return true }) }()
	waitService(t, cc, namedSvc, func(es []*api.ServiceEntry) bool {
		return len(es) == 1 && es[0].Checks.AggregatedStatus() == api.HealthPassing
	})
	cancel2()
	<-done2
	// keep=true leaves it; a third run adopts the same ID without a duplicate.
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	w3, _ := New(Config{Logger: logger, Named: map[string]Spec{named: {Service: namedSvc, Port: 7000}}})
	go w3.Run(ctx3)
	reg3 := &Registrar{Consul: cc, Node: node, Watcher: w3, Logger: logger}
	done3 := make(chan struct{})
	go func() { defer close(done3); reg3.Run(ctx3, func() bool { return false }) }()
	time.Sleep(time.Second)
	if es, _, _ := cc.Health().Service(namedSvc, "", false, nil); len(es) != 1 {
		t.Fatalf("after re-adoption %d registrations, want 1", len(es))
	}
	cancel3()
	<-done3
}
