package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
	"github.com/nullnet/nullnet/lib/retry"
)

// Meta keys and tag on host service registrations. MetaNode must equal server.MetaNode
// ("nullnet-node"): the server matches replicas to the nullnet node that serves them with it.
// It is duplicated here rather than imported because agent/server sits above this package.
const (
	MetaStack    = "nullnet-stack"
	MetaNode     = "nullnet-node"
	MetaProtocol = "nullnet-protocol"
	HostTag      = "nullnet-host"
)

// ServiceID is the Consul service ID of host service name on node.
func ServiceID(node, name string) string { return "nullnet-host-" + node + "-" + name }

func portCheckID(id string) string     { return id + ":port" }
func listenerCheckID(id string) string { return id + ":listener" }

// HostServiceStatus is one declared host service, as shown in /v1/agent/self.
type HostServiceStatus struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	Stack      string `json:"stack"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	Registered bool   `json:"registered"`
	// Listener is the agent's own judgement of the socket bound to the port (check output).
	Listener       string `json:"listener"`
	ListenerStatus string `json:"listener_status"`
}

// hostServices keeps the host services of the agent configuration registered in the local
// Consul agent: each with a Consul TCP (or UDP) check against advertise_addr:port and a TTL
// check the agent updates from the host's socket table. It re-registers what Consul lost (an
// agent restart), deregisters what left the configuration, and everything on shutdown.
type hostServices struct {
	consul  *api.Client
	logger  hclog.Logger
	emit    func(events.Event)
	trigger chan struct{}

	mu         sync.Mutex
	node       string
	checkAddr  string
	direct     netip.Addr                    // see listenerHealth
	desired    map[string]config.HostService // by service ID
	registered map[string]config.HostService // what Consul has, by service ID
	listener   map[string][2]string          // status, output by service ID
}

func newHostServices(client *api.Client, logger hclog.Logger, emit func(events.Event)) *hostServices {
	return &hostServices{consul: client, logger: logger, emit: emit, trigger: make(chan struct{}, 1),
		registered: map[string]config.HostService{}, listener: map[string][2]string{}}
}

// set replaces the desired services (start and SIGHUP) and wakes the loop.
func (h *hostServices) set(cfg *config.Config) {
	h.mu.Lock()
	h.node = cfg.NodeName
	h.checkAddr = checkAddress(cfg)
	h.direct = netip.Addr{}
	if cfg.Server.Enabled && cfg.Server.Network == config.NetworkDirect {
		if ip, err := netip.ParseAddr(h.checkAddr); err == nil {
			h.direct = ip.Unmap()
		}
	}
	h.desired = map[string]config.HostService{}
	for _, s := range cfg.Client.Services {
		h.desired[ServiceID(cfg.NodeName, s.Name)] = s
		if ip := net.ParseIP(s.Address); ip != nil && ip.IsLoopback() && !h.direct.IsValid() {
			h.logger.Warn("host service listens on loopback only and cannot be reached over the overlay; "+
				"listen on 0.0.0.0", "service", s.Name, "address", s.Address)
		}
	}
	h.mu.Unlock()
	select {
	case h.trigger <- struct{}{}:
	default:
	}
}

// checkAddress is where Consul probes host services: the address tunnels reach this host at.
func checkAddress(cfg *config.Config) string {
	if cfg.AdvertiseAddr != "" {
		return cfg.AdvertiseAddr
	}
	if ip := net.ParseIP(cfg.BindAddr); ip != nil && !ip.IsUnspecified() {
		return cfg.BindAddr
	}
	return "127.0.0.1"
}

// run reconciles until ctx ends, then deregisters every host service it registered unless
// keep says otherwise: a registration left in place keeps its replica usable across an agent
// restart (deregistering it would end its sessions, replica_gone), and its Consul check keeps
// telling whether the service itself is up.
func (h *hostServices) run(ctx context.Context, keep func() bool) {
	failures := 0
	for {
		delay := h.interval()
		if err := h.reconcile(ctx); err != nil {
			failures++
			if failures == 1 || failures%10 == 0 {
				h.logger.Warn("registering host services in Consul failed; retrying", "error", err, "failures", failures)
			}
			delay = min(delay, retry.Backoff(100*time.Millisecond, 10*time.Second, failures))
		} else {
			failures = 0
		}
		h.updateListeners()
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if keep() {
				h.logger.Info("host services left registered for the next start", "count", h.registeredCount())
				return
			}
			h.deregisterAll()
			return
		case <-h.trigger:
			t.Stop()
		case <-t.C:
		}
	}
}

// interval is the shortest check interval of the desired services (how often listener state is
// refreshed and registrations verified).
func (h *hostServices) interval() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := config.DefaultCheckInterval
	for _, s := range h.desired {
		if s.CheckInterval > 0 && s.CheckInterval < d {
			d = s.CheckInterval
		}
	}
	return max(d, 500*time.Millisecond)
}

// reconcile makes Consul's registrations match the desired set.
func (h *hostServices) reconcile(ctx context.Context) error {
	h.mu.Lock()
	node, addr := h.node, h.checkAddr
	desired := make(map[string]config.HostService, len(h.desired))
	for id, s := range h.desired {
		desired[id] = s
	}
	h.mu.Unlock()

	q := (&api.QueryOptions{}).WithContext(ctx)
	current, err := h.consul.Agent().ServicesWithFilterOpts(fmt.Sprintf("Meta[%q] == %q", MetaNode, node), q)
	if err != nil {
		return fmt.Errorf("listing services of the local Consul agent: %w", err)
	}
	var errs []string
	ids := make([]string, 0, len(desired))
	for id := range desired {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s := desired[id]
		h.mu.Lock()
		prev, known := h.registered[id]
		h.mu.Unlock()
		if _, present := current[id]; present && known && reflect.DeepEqual(prev, s) {
			continue
		}
		if err := h.consul.Agent().ServiceRegisterOpts(registration(node, addr, s), api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
			errs = append(errs, fmt.Sprintf("register %s: %v", s.Name, err))
			continue
		}
		h.mu.Lock()
		h.registered[id] = s
		h.mu.Unlock()
		h.logger.Info("host service registered in Consul", "service", s.Name, "id", id, "check", checkTarget(addr, s))
		h.emit(events.Event{Kind: events.HostServiceRegistered, Message: "host service registered in Consul",
			Fields: map[string]string{"service": s.Name, "stack": s.Stack, "port": strconv.Itoa(s.Port), "protocol": s.Protocol}})
	}
	// Deregister ours that left the configuration (also those of an earlier run).
	for id := range current {
		if _, ok := desired[id]; ok || !strings.HasPrefix(id, ServiceID(node, "")) {
			continue
		}
		if err := h.consul.Agent().ServiceDeregisterOpts(id, q); err != nil {
			errs = append(errs, fmt.Sprintf("deregister %s: %v", id, err))
			continue
		}
		h.mu.Lock()
		delete(h.registered, id)
		delete(h.listener, id)
		h.mu.Unlock()
		h.logger.Info("host service deregistered from Consul", "id", id, "service", current[id].Service)
		h.emit(events.Event{Kind: events.HostServiceDeregistered, Message: "host service removed from the configuration",
			Fields: map[string]string{"service": current[id].Service}})
	}
	// Forget registrations Consul lost so they are made again next time.
	h.mu.Lock()
	for id := range h.registered {
		if _, ok := current[id]; !ok {
			if _, want := desired[id]; !want {
				delete(h.registered, id)
			}
		}
	}
	h.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func checkTarget(addr string, s config.HostService) string {
	return net.JoinHostPort(addr, strconv.Itoa(s.Port))
}

// listenerTTLFloor: the listener check's TTL is 3 × check_interval but never less than this, so
// that an agent restart (an upgrade with keep_tunnels_on_stop, the service still running) does
// not let the check expire and take the replica's live sessions down with it. Seen in the e2e
// suite: a 2 s restart with check_interval = 1s (TTL 3 s) expired the check before the new
// process updated it.
const listenerTTLFloor = 30 * time.Second

func listenerTTL(interval time.Duration) time.Duration { return max(3*interval, listenerTTLFloor) }

// registration is the Consul entry of host service s on node.
func registration(node, addr string, s config.HostService) *api.AgentServiceRegistration {
	id := ServiceID(node, s.Name)
	interval := s.CheckInterval
	if interval <= 0 {
		interval = config.DefaultCheckInterval
	}
	port := &api.AgentServiceCheck{
		CheckID:  portCheckID(id),
		Name:     fmt.Sprintf("%s port %d answers on %s", strings.ToUpper(s.Protocol), s.Port, addr),
		Interval: interval.String(),
		Timeout:  min(interval, 2*time.Second).String(),
		Notes:    "Probed at the node's advertise address, the address tunnels reach it at.",
	}
	listener := &api.AgentServiceCheck{
		CheckID: listenerCheckID(id),
		Name:    "listener reachable over the overlay",
		Notes:   "The nullnet agent reads the host's socket table: a listener on 127.0.0.1 only cannot be reached through a tunnel.",
		TTL:     listenerTTL(interval).String(),
		Status:  api.HealthCritical,
	}
	checks := api.AgentServiceChecks{port, listener}
	if s.Protocol == "udp" {
		// No UDP probe: Consul's UDP check waits for a reply to an empty datagram, which most
		// UDP services (DNS among them) never send, so it would stay critical forever. The
		// socket-table check says whether a UDP socket is bound on a reachable address.
		checks = api.AgentServiceChecks{listener}
	} else {
		port.TCP = checkTarget(addr, s)
	}
	return &api.AgentServiceRegistration{
		ID:      id,
		Name:    s.Name,
		Tags:    []string{HostTag},
		Port:    s.Port,
		Address: addr,
		Meta:    map[string]string{MetaStack: s.Stack, MetaNode: node, MetaProtocol: s.Protocol},
		Checks:  checks,
	}
}

// updateListeners refreshes every registered service's listener check from the socket table,
// logging and emitting an event when one turns unreachable.
func (h *hostServices) updateListeners() {
	socks, err := scanListeners()
	if err != nil {
		h.logger.Warn("cannot read the socket table for listener checks", "error", err)
		return
	}
	h.mu.Lock()
	direct := h.direct
	regs := make(map[string]config.HostService, len(h.registered))
	for id, s := range h.registered {
		regs[id] = s
	}
	h.mu.Unlock()
	for id, s := range regs {
		status, out := listenerHealth(s.Name, s.Protocol, s.Port, socks, direct)
		if err := h.consul.Agent().UpdateTTL(listenerCheckID(id), out, status); err != nil {
			h.logger.Debug("updating a listener check failed", "check", listenerCheckID(id), "error", err)
			continue
		}
		h.mu.Lock()
		prev := h.listener[id]
		h.listener[id] = [2]string{status, out}
		h.mu.Unlock()
		if prev[0] == status && prev[1] == out {
			continue
		}
		if status == api.HealthPassing {
			h.logger.Info("host service listener is reachable", "service", s.Name, "detail", out)
			continue
		}
		h.logger.Warn("host service cannot be reached over the overlay", "service", s.Name, "detail", out)
		h.emit(events.Event{Kind: events.HostServiceUnreachable, Severity: events.Warning, Message: out,
			Fields: map[string]string{"service": s.Name, "port": strconv.Itoa(s.Port), "protocol": s.Protocol, "status": status}})
	}
}

func (h *hostServices) registeredCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.registered)
}

// deregisterAll removes every host service of this node (leave): those this run registered and
// those an earlier run left registered (a restart that kept them) that this run had not yet
// taken over.
func (h *hostServices) deregisterAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.mu.Lock()
	node := h.node
	ids := make(map[string]bool, len(h.registered))
	for id := range h.registered {
		ids[id] = true
	}
	h.mu.Unlock()
	q := (&api.QueryOptions{}).WithContext(ctx)
	if current, err := h.consul.Agent().ServicesWithFilterOpts(fmt.Sprintf("Meta[%q] == %q", MetaNode, node), q); err == nil {
		for id := range current {
			if strings.HasPrefix(id, ServiceID(node, "")) {
				ids[id] = true
			}
		}
	} else {
		h.logger.Warn("listing host services at leave failed; deregistering those this run registered", "error", err)
	}
	n := 0
	for id := range ids {
		if err := h.consul.Agent().ServiceDeregisterOpts(id, q); err != nil {
			h.logger.Warn("deregistering a host service at shutdown failed", "id", id, "error", err)
			continue
		}
		n++
		h.mu.Lock()
		delete(h.registered, id)
		h.mu.Unlock()
	}
	if n > 0 {
		h.logger.Info("host services deregistered", "count", n)
	}
}

// status lists the desired services for /v1/agent/self.
func (h *hostServices) status() []HostServiceStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HostServiceStatus, 0, len(h.desired))
	for id, s := range h.desired {
		_, reg := h.registered[id]
		l := h.listener[id]
		out = append(out, HostServiceStatus{Name: s.Name, ID: id, Stack: s.Stack, Port: s.Port, Protocol: s.Protocol,
			Registered: reg, ListenerStatus: l[0], Listener: l[1]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
