// Package proxy is the ingress data plane: listeners that follow the port table, the TCP and
// UDP relays and the HTTP router.
//
// Ownership: Run owns every goroutine the proxy starts. The watch loop feeds reconcile, which
// starts one slot goroutine per (protocol, port); a slot owns its socket and, for UDP, its
// sessions. TCP connections and HTTP requests belong to the proxy itself (not to their listener),
// so removing a mapping stops new traffic without cutting live connections.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/agent/edgepolicy"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc"
)

// Config is what the proxy role needs from the agent.
type Config struct {
	Agent  *config.Config
	Conn   *grpc.ClientConn
	Events events.Emitter
	Logger hclog.Logger

	// Resolver overrides the gRPC resolver built on Conn (embedding and tests).
	Resolver Resolver
	// BindRetryMin/Max bound the backoff between bind attempts of a listener whose port is
	// taken (defaults 250ms and 10s).
	BindRetryMin, BindRetryMax time.Duration
	// DisableHTTP skips the HTTP router and the HTTPS listener (their addresses are often
	// privileged in tests).
	DisableHTTP bool
	// TLSHelloTimeout bounds how long a tls listener waits for a ClientHello (default 10s).
	TLSHelloTimeout time.Duration
}

// settings are the reloadable knobs from the agent configuration.
type settings struct {
	BindAddr       string
	DialTimeout    time.Duration
	UDPIdleTimeout time.Duration
	UDPMaxSessions int
	UDPQueueLength int

	UDPReceiveBuffer           int
	UDPNewSessionRate          int
	UDPNewSessionRatePerPrefix int
	UseLinger                  time.Duration
	DrainTimeout               time.Duration
	// ProxyProtocolFrom are the front load balancers that send PROXY headers.
	ProxyProtocolFrom *edgepolicy.Matcher
}

func settingsFrom(c *config.Config) *settings {
	p := c.Proxy
	return &settings{BindAddr: p.BindAddr, DialTimeout: p.DialTimeout, UDPIdleTimeout: p.UDPIdleTimeout,
		UDPMaxSessions: p.UDPMaxSessions, UDPQueueLength: p.UDPQueueLength, UseLinger: p.UseLinger,
		DrainTimeout: p.DrainTimeout, UDPReceiveBuffer: p.UDPReceiveBuffer, UDPNewSessionRate: p.UDPNewSessionRate,
		UDPNewSessionRatePerPrefix: p.UDPNewSessionRatePerPrefix, ProxyProtocolFrom: trustedPrefixes(c)}
}

// Proxy is the ingress role.
type Proxy struct {
	cfg      Config
	logger   hclog.Logger
	events   events.Emitter
	resolver Resolver
	grpcRes  *grpcResolver   // nil when Config.Resolver was given
	shares   *sharedResolver // wraps grpcRes unless sharing is off
	set      atomic.Pointer[settings]
	httpAddr string

	bindRetryMin, bindRetryMax time.Duration
	tlsHelloTimeout            time.Duration

	// runCtx is the parent of every slot and connection; Run cancels it (stop) when it ends.
	runCtx context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup // slots, connections, sessions' helpers

	mu           sync.Mutex
	slots        map[listenerKey]*slot
	closing      map[listenerKey]chan struct{} // done channels of removed slots still closing
	tableVersion uint64
	tableAt      time.Time
	stream       string // "connecting", "connected", "disconnected"
	streamErr    string

	// draining is set by Drain: no listener opens, UDP listeners admit no new client.
	draining atomic.Bool

	workers *workerPool // runs TCP connections' goroutines; stopped when Run ends
	conns   connSet     // live TCP connections, closed at shutdown
	uses    useSet      // live TCP connections and UDP sessions with their leases (adopt.go)
	// reannounceKick wakes reannounceLoop after the port-table stream reconnected.
	reannounceKick chan struct{}
	http           *httpRouter

	// PROXY headers rejected from trusted peers, and the last log line about them.
	headerRejects, headerLogged atomic.Uint64
	headerLogAt                 atomic.Int64
	// policies is the latest bundle's policies by service (policies.go); nil before the first.
	policies atomic.Pointer[servicepolicy.Index]
	// httpUses holds the HTTP requests of close_on_unhealthy services (unhealthy.go).
	httpUses httpUseSet
	// certs is the TLS certificate set the servers stream (certs.go).
	certs *certs.Set
	// https serves proxy.https_addr ("" = off) through the HTTP router (https.go).
	https     *httpsServer
	httpsAddr string

	// edge is the services' client policies (edge.go), replaced under edgeMu per port table.
	edge   atomic.Pointer[edgeTable]
	edgeMu sync.Mutex
}

// New builds the proxy role.
func New(cfg Config) (*Proxy, error) {
	if cfg.Agent == nil {
		return nil, errors.New("proxy: no agent configuration")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Events == nil {
		cfg.Events = events.New(256, cfg.Logger)
	}
	p := &Proxy{cfg: cfg, logger: cfg.Logger, events: cfg.Events, slots: map[listenerKey]*slot{},
		closing: map[listenerKey]chan struct{}{}, reannounceKick: make(chan struct{}, 1),
		stream: "connecting", httpAddr: cfg.Agent.Proxy.HTTPAddr,
		bindRetryMin: cfg.BindRetryMin, bindRetryMax: cfg.BindRetryMax, certs: &certs.Set{}}
	if p.bindRetryMin <= 0 {
		p.bindRetryMin = 250 * time.Millisecond
	}
	if p.bindRetryMax < p.bindRetryMin {
		p.bindRetryMax = max(10*time.Second, p.bindRetryMin)
	}
	p.tlsHelloTimeout = cfg.TLSHelloTimeout
	if p.tlsHelloTimeout <= 0 {
		p.tlsHelloTimeout = tlsHelloTimeout
	}
	p.runCtx, p.stop = context.WithCancel(context.Background())
	p.set.Store(settingsFrom(cfg.Agent))
	p.resolver = cfg.Resolver
	if p.resolver == nil {
		if cfg.Conn == nil {
			return nil, errors.New("proxy: no server connection")
		}
		p.grpcRes = newGRPCResolver(cfg.Conn, cfg.Agent.NodeName, cfg.Logger.Named("resolver"))
		// Always wrapped: proxy.use_linger = 0 (sharing off) passes calls through, and a
		// reload can turn sharing on or off.
		p.shares = newSharedResolver(p.grpcRes, cfg.Agent.Proxy.UseLinger, cfg.Logger.Named("resolver"))
		p.resolver = p.shares
	}
	p.conns.m = map[any]func(){}
	p.workers = newWorkerPool()
	p.http = newHTTPRouter(p)
	p.httpsAddr = cfg.Agent.Proxy.HTTPSAddr
	p.https = newHTTPSServer(p)
	return p, nil
}

func (p *Proxy) settings() *settings { return p.set.Load() }

// RegisterHTTP adds the proxy's HTTP routes.
func (p *Proxy) RegisterHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/proxy/listeners", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p.Status())
	})
}

// Status is shown in /v1/agent/self and /v1/proxy/listeners.
type Status struct {
	Stream       string           `json:"stream"`
	Draining     bool             `json:"draining,omitempty"`
	StreamError  string           `json:"stream_error,omitempty"`
	TableVersion uint64           `json:"table_version"`
	TableAt      time.Time        `json:"table_received_at,omitzero"`
	HTTPAddr     string           `json:"http_addr,omitempty"`
	HTTPError    string           `json:"http_error,omitempty"` // last bind error while retrying
	HTTPSAddr    string           `json:"https_addr,omitempty"`
	HTTPSError   string           `json:"https_error,omitempty"` // last bind error while retrying
	Listeners    []ListenerStatus `json:"listeners"`
}

// ListenerStatus is one (protocol, port) slot.
type ListenerStatus struct {
	Protocol    Protocol  `json:"protocol"`
	Port        uint16    `json:"port"`
	Service     string    `json:"service"`
	IdleTimeout string    `json:"idle_timeout"`
	State       string    `json:"state"`
	Since       time.Time `json:"since"`
	Error       string    `json:"error,omitempty"`
	Failures    int       `json:"bind_failures,omitempty"`
	RetryAt     time.Time `json:"retry_at,omitzero"`
	Active      int64     `json:"active"`
}

// Status reports the stream and every listener, sorted by protocol and port.
func (p *Proxy) Status() any { return p.status() }

func (p *Proxy) status() Status {
	p.mu.Lock()
	st := Status{Stream: p.stream, Draining: p.draining.Load(), StreamError: p.streamErr, TableVersion: p.tableVersion, TableAt: p.tableAt,
		Listeners: []ListenerStatus{}}
	if !p.cfg.DisableHTTP {
		st.HTTPAddr = p.httpAddr
		st.HTTPSAddr = p.httpsAddr
		st.HTTPError, st.HTTPSError = p.http.bind.lastErr(), p.https.bind.lastErr()
	}
	slots := make([]*slot, 0, len(p.slots))
	for _, s := range p.slots {
		slots = append(slots, s)
	}
	p.mu.Unlock()
	for _, s := range slots {
		m := s.mapping.Load()
		s.mu.Lock()
		ls := ListenerStatus{Protocol: m.Protocol, Port: m.Port, Service: m.Service, IdleTimeout: m.IdleTimeout.String(),
			State: s.state, Since: s.since, Error: s.lastErr, Failures: s.failures, RetryAt: s.retryAt}
		if s.active != nil && s.state == "listening" {
			ls.Active = s.active()
		}
		s.mu.Unlock()
		st.Listeners = append(st.Listeners, ls)
	}
	slices.SortFunc(st.Listeners, func(a, b ListenerStatus) int {
		if a.Protocol != b.Protocol {
			if a.Protocol < b.Protocol {
				return -1
			}
			return 1
		}
		return int(a.Port) - int(b.Port)
	})
	return st
}

// Run serves until ctx ends. On return every listener is closed, every connection and session
// ended and released (releases get a short grace period to reach the server).
func (p *Proxy) Run(ctx context.Context) error {
	runCtx, cancel := p.runCtx, p.stop
	defer cancel()

	var bg sync.WaitGroup
	if !p.cfg.DisableHTTP {
		if err := p.startAccessLog(); err != nil {
			return err
		}
		bg.Add(1)
		go func() { defer bg.Done(); p.http.run(runCtx, p.httpAddr) }()
		if p.httpsAddr != "" {
			bg.Add(1)
			go func() { defer bg.Done(); p.https.run(runCtx, p.httpsAddr) }()
		}
	}
	bg.Add(1)
	go func() { defer bg.Done(); p.edgeLoop(runCtx) }()
	if p.cfg.Conn != nil {
		bg.Add(1)
		go func() { defer bg.Done(); p.watch(runCtx) }()
		bg.Add(1)
		go func() { defer bg.Done(); p.reannounceLoop(runCtx) }()
		bg.Add(1)
		go func() { defer bg.Done(); p.watchUnhealthy(runCtx) }()
		bg.Add(1)
		go func() { defer bg.Done(); p.watchCerts(runCtx) }()
	}

	<-ctx.Done()
	cancel()
	if p.grpcRes != nil {
		p.grpcRes.beginClose() // the releases below go out at once, each tried once
	}
	bg.Wait()
	p.conns.closeAll()
	p.wg.Wait()
	p.workers.stop() // every connection has ended: only idle workers are left
	p.stopAccessLog()
	if p.shares != nil {
		p.shares.Close()
	}
	if p.grpcRes != nil {
		p.grpcRes.Close(stopReleaseGrace)
	}
	return nil
}

// stopReleaseGrace bounds the releases sent when the proxy stops: one attempt each, all at
// once; a server that answers at all answers within it.
const stopReleaseGrace = time.Second

// Reload applies a new agent configuration: timeouts, UDP bounds and use_linger apply to new
// connections and sessions at once; bind_addr, http_addr and https_addr changes need a restart
// (logged).
func (p *Proxy) Reload(cfg *config.Config) error {
	old := p.settings()
	next := settingsFrom(cfg)
	if next.BindAddr != old.BindAddr {
		p.logger.Warn("proxy.bind_addr changed; existing listeners keep the old address until restart",
			"old", old.BindAddr, "new", next.BindAddr)
		next.BindAddr = old.BindAddr
	}
	if cfg.Proxy.HTTPSAddr != p.httpsAddr {
		p.logger.Warn("proxy.https_addr changed; takes effect after restart", "old", p.httpsAddr, "new", cfg.Proxy.HTTPSAddr)
	}
	if cfg.Proxy.HTTPAddr != p.httpAddr {
		p.logger.Warn("proxy.http_addr changed; takes effect after restart", "old", p.httpAddr, "new", cfg.Proxy.HTTPAddr)
	}
	p.set.Store(next)
	if !p.cfg.DisableHTTP {
		p.reloadAccessLog(cfg.Proxy.AccessLog)
	}
	if p.shares != nil && next.UseLinger != old.UseLinger {
		p.shares.setLinger(next.UseLinger)
		p.logger.Info("proxy.use_linger changed", "old", old.UseLinger, "new", next.UseLinger)
	}
	return nil
}

// connSet tracks live TCP connections so that shutdown can end them.
type connSet struct {
	mu     sync.Mutex
	m      map[any]func()
	closed bool
}

// add registers a close function; it reports false when the set is already closed.
func (c *connSet) add(k any, closeFn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.m[k] = closeFn
	return true
}

func (c *connSet) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func (c *connSet) remove(k any) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *connSet) closeAll() {
	c.mu.Lock()
	c.closed = true
	fns := make([]func(), 0, len(c.m))
	for _, f := range c.m {
		fns = append(fns, f)
	}
	c.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

// listenerLabels are the metric labels of a listener.
func listenerLabels(m *Mapping) []metrics.Label {
	return []metrics.Label{{Name: "protocol", Value: string(m.Protocol)},
		{Name: "port", Value: fmt.Sprint(m.Port)}, {Name: "service", Value: m.Service}}
}

func (p *Proxy) listenerMetric(m *Mapping, what string) {
	metrics.IncrCounterWithLabels([]string{"nullnet", "proxy", "listener", what}, 1, listenerLabels(m))
}
