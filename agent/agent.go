// Package agent is the long-running nullnet process: it turns the configuration into roles
// (server, client, proxy), serves the HTTP API and, for servers, gRPC; it reloads on SIGHUP and
// stops cleanly.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/client"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/proxy"
	"github.com/nullnet/nullnet/agent/server"
	"github.com/nullnet/nullnet/agent/serverconn"
	"github.com/nullnet/nullnet/agent/tlsutil"
	"github.com/nullnet/nullnet/agent/version"
	"github.com/nullnet/nullnet/config"
	"google.golang.org/grpc"
)

// Role is one role of the agent. Run blocks until ctx ends and then releases everything it
// owns; Reload applies a new configuration without a restart.
type Role interface {
	Run(ctx context.Context) error
	Reload(cfg *config.Config) error
}

// Agent owns every long-running part of the process.
type Agent struct {
	logger  hclog.Logger
	level   hclog.Level
	mu      sync.Mutex
	cfg     *config.Config
	started time.Time
	fds     fdBudget

	consul   *api.Client
	metrics  *Metrics
	events   *events.Store
	reporter *events.Reporter
	// refusals and remote aggregate the events remote parties can trigger at will (see
	// events.RemoteTriggered): gRPC refusals on servers, relay failures on proxies.
	refusals  *events.Aggregator
	remote    *events.Aggregator
	conn      *serverconn.Conn
	server    *server.Server
	client    *client.Client
	proxy     *proxy.Proxy
	roles     map[string]Role
	grpc      *grpc.Server
	grpcLn    net.Listener
	streams   *streamLimiter
	http      *http.Server
	httpLn    net.Listener
	runCancel context.CancelFunc
	leave     leaveState // Leave: drain, then stop (leave.go)
	dev       *devSetup  // -dev only
}

// aggregateInterval is how often aggregated events are summarised (a variable for tests).
var aggregateInterval = events.DefaultAggregateInterval

// New builds an agent; nothing runs until Run. Listeners are bound here so that a port clash is
// reported at once, with the port.
func New(cfg *config.Config, logger hclog.Logger) (_ *Agent, err error) {
	a := &Agent{cfg: cfg, logger: logger, started: time.Now(), roles: map[string]Role{}}
	if cfg.DevMode {
		if a.dev, err = newDevSetup(cfg, logger.Named("dev")); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				a.dev.close()
			}
		}()
		cfg = a.dev.apply(cfg)
		a.cfg = cfg
	}
	// Descriptors next: the caps they impose are part of the configuration every role gets.
	a.fds = budgetFor(cfg, logger)
	cfg = a.fds.apply(cfg)
	a.cfg = cfg
	m, err := NewMetrics(cfg.Telemetry, cfg.NodeName)
	if err != nil {
		return nil, err
	}
	a.metrics = m

	needConsul := cfg.Server.Enabled || cfg.Client.Enabled || cfg.Proxy.Enabled
	if needConsul {
		if a.consul, err = consul.NewClient(cfg.Consul); err != nil {
			return nil, err
		}
	}
	if cfg.Server.Enabled {
		a.events = events.New(cfg.Server.EventBufferSize, logger)
		a.refusals = events.NewAggregator(events.AggregatorConfig{Next: a.events, Interval: aggregateInterval,
			Keys: events.RemoteTriggered})
		a.server, err = server.New(server.Config{Agent: cfg, Consul: a.consul, Events: a.events, Logger: logger.Named("server")})
		if err != nil {
			return nil, fmt.Errorf("server role: %w", err)
		}
		a.roles["server"] = a.server
		opts, err := a.grpcServerOptions()
		if err != nil {
			return nil, err
		}
		a.grpc = grpc.NewServer(opts...)
		a.server.RegisterGRPC(a.grpc)
		addr := net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.GRPC))
		if a.grpcLn, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("gRPC listener on %s: %w", addr, err)
		}
	}
	if cfg.Client.Enabled || cfg.Proxy.Enabled {
		servers := cfg.Client.Servers
		if len(servers) == 0 {
			servers = cfg.Proxy.Servers
		}
		creds, err := a.grpcClientCreds()
		if err != nil {
			return nil, err
		}
		a.conn, err = serverconn.Dial(serverconn.Config{Servers: servers, Consul: a.consul, Creds: creds, Logger: logger})
		if err != nil {
			return nil, err
		}
		a.reporter = events.NewReporter(cfg.NodeName, a.conn, a.events, logger)
		a.remote = events.NewAggregator(events.AggregatorConfig{Next: a.reporter, Interval: aggregateInterval,
			Keys: events.RemoteTriggered})
		a.client, err = client.New(client.Config{Agent: cfg, Consul: a.consul, Conn: a.conn.ClientConn,
			Events: a.remote, Logger: logger.Named("client")})
		if err != nil {
			return nil, fmt.Errorf("client role: %w", err)
		}
		a.roles["client"] = a.client
	}
	if cfg.Proxy.Enabled {
		a.proxy, err = proxy.New(proxy.Config{Agent: cfg, Conn: a.conn.ClientConn, Events: a.remote,
			Logger: logger.Named("proxy")})
		if err != nil {
			return nil, fmt.Errorf("proxy role: %w", err)
		}
		a.roles["proxy"] = a.proxy
	}

	if err := a.listenHTTP(); err != nil {
		return nil, err
	}
	return a, nil
}

// listenHTTP binds the HTTP API on client_addr with its limits: timeouts for slow and idle
// clients, and a connection cap per client IP and in total, so that API callers can never take
// the descriptors the data plane needs.
func (a *Agent) listenHTTP() error {
	cfg, lim := a.cfg, a.cfg.Limits
	tc, err := tlsutil.HTTPServerConfig(cfg.TLS)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(cfg.ClientAddr, strconv.Itoa(cfg.Ports.HTTP))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("HTTP API listener on %s: %w", addr, err)
	}
	if ip := net.ParseIP(cfg.ClientAddr); tc == nil && (ip == nil || !ip.IsLoopback()) {
		a.logger.Warn("the HTTP API listens on a non-loopback address without TLS: anyone who reaches it can "+
			"read the configuration and tear sessions down; configure a tls block or set client_addr to 127.0.0.1",
			"client_addr", cfg.ClientAddr)
	}
	a.httpLn = newLimitListener(ln, lim.HTTPMaxConnsPerClient, lim.HTTPMaxConns, tc == nil, a.logger.Named("http"))
	a.http = &http.Server{
		Handler:           a.routes(),
		TLSConfig:         tc,
		ReadHeaderTimeout: min(10*time.Second, lim.HTTPReadTimeout),
		ReadTimeout:       lim.HTTPReadTimeout,
		WriteTimeout:      lim.HTTPWriteTimeout,
		IdleTimeout:       lim.HTTPIdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          newHTTPErrorLog(a.logger.Named("http")),
	}
	return nil
}

// HTTPAddr is the bound address of the HTTP API.
func (a *Agent) HTTPAddr() string { return a.httpLn.Addr().String() }

// Run serves until ctx ends, then stops every role and listener; it returns once all
// goroutines it started have ended.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(a.roles)+4)
	goRun := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	goRun("http", func() error {
		serve := func() error { return a.http.Serve(a.httpLn) }
		if a.http.TLSConfig != nil {
			serve = func() error { return a.http.ServeTLS(a.httpLn, "", "") }
		}
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	if a.grpc != nil {
		goRun("grpc", func() error { return a.grpc.Serve(a.grpcLn) })
	}
	if a.conn != nil {
		goRun("serverconn", func() error { a.conn.Run(ctx); return nil })
	}
	if a.dev != nil {
		goRun("dev", func() error { return a.dev.run(ctx) })
	}
	if a.reporter != nil {
		goRun("events", func() error { a.reporter.Run(ctx); return nil })
	}
	if a.consul != nil {
		reg := selfRegistration(a.cfg)
		goRun("consul-registration", func() error { keepRegistered(ctx, a.consul, reg, a.keepsOnStop, a.logger); return nil })
	}
	for name, r := range a.roles {
		goRun(name, func() error { return r.Run(ctx) })
	}
	a.logger.Info("agent running", "node", a.cfg.NodeName, "roles", a.cfg.Roles(), "http", a.HTTPAddr(),
		"version", version.Version)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		a.logger.Error("agent stopping after a fatal error", "error", runErr)
	case <-a.leave.requested():
		a.drain(ctx)
	}
	if a.leave.remove.Load() && a.client != nil {
		a.client.Leave() // a leave asked for during a SIGTERM's drain still removes everything
	}
	cancel()
	a.logger.Info("agent stopping")
	shutCtx, shutCancel := context.WithTimeout(context.Background(), time.Second)
	_ = a.http.Shutdown(shutCtx)
	shutCancel()
	if a.grpc != nil {
		stopped := make(chan struct{})
		go func() { a.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(500 * time.Millisecond):
			a.grpc.Stop() // streams (port-table watches) never end by themselves
		}
	}
	wg.Wait()
	for _, agg := range []*events.Aggregator{a.refusals, a.remote} {
		if agg != nil {
			agg.Stop() // what is held is recorded, not lost
		}
	}
	if a.conn != nil {
		_ = a.conn.Close()
	}
	a.logger.Info("agent stopped")
	return runErr
}

// Reload applies a new configuration: log level, and each role's reloadable parts.
func (a *Agent) Reload(cfg *config.Config) error {
	if a.dev != nil {
		cfg = a.dev.apply(cfg)
	}
	cfg = a.fds.apply(cfg)
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	a.logger.SetLevel(hclog.LevelFromString(cfg.LogLevel))
	var errs []error
	for name, r := range a.roles {
		if err := r.Reload(cfg); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Config returns the configuration in effect.
func (a *Agent) Config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}
