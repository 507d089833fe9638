// Package client is the node side: the control channel to a server, tunnel ends built with
// netlink, and host services registered in Consul.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/containers"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/overlay"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
)

// Overlay is what the client needs from an overlay.Manager. Tests of the control-channel
// protocol substitute a small fake; everything else uses the real Manager.
type Overlay interface {
	Setup(ctx context.Context, e overlay.End) (overlay.Result, error)
	Teardown(ctx context.Context, id uint32, side overlay.Side) error
	Cleanup(ctx context.Context) ([]string, error)
	UnderlayMTU(addr netip.Addr) int
	InterfaceMTU(name string) int
}

// Defaults for Config fields that tests shorten.
const (
	DefaultReconnectMax = 15 * time.Second
	// DefaultParallel bounds commands for different net ids running at once; the kernel
	// serializes most of the work under its rtnl lock anyway.
	DefaultParallel = 8
	ackQueue        = 4096
)

// Config is what the client role needs from the agent.
type Config struct {
	Agent  *config.Config
	Consul *api.Client
	// Conn reaches the servers; nil disables the control channel (host services only).
	Conn   *grpc.ClientConn
	Events events.Emitter
	Logger hclog.Logger

	// Overlay builds tunnel ends; nil means an overlay.Manager in the agent's own network
	// namespace.
	Overlay Overlay
	// ReconnectMax caps the control channel's reconnect backoff (default DefaultReconnectMax).
	ReconnectMax time.Duration
	// Parallel bounds concurrently running commands (default DefaultParallel).
	Parallel int
}

// Client is the node role.
type Client struct {
	cfg          Config
	logger       hclog.Logger
	overlay      Overlay
	ownsOverlay  *overlay.Manager
	services     *hostServices
	containers   *containers.Watcher // set by runContainers; nil without a Docker Engine
	reconnectMax time.Duration
	acks         chan *pb.CommandAck
	cleanupOnce  sync.Once
	// leaving is set by Leave: the stop removes everything whatever keep_tunnels_on_stop says.
	leaving atomic.Bool
	// instance is random per process: the server tells a restarted agent from a reconnect.
	instance string

	// exec is created by Run (it needs Run's context).
	exec *executor

	mu             sync.Mutex
	agent          *config.Config
	ends           map[endKey]EndStatus
	server         string
	connectedSince time.Time
	cleanedUp      bool
	underlayMTU    int // measured by Run; 0 = unknown
}

// New builds the client role. Nothing runs until Run.
func New(cfg Config) (*Client, error) {
	if cfg.Agent == nil {
		return nil, errors.New("client: no agent configuration")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c := &Client{cfg: cfg, logger: logger, overlay: cfg.Overlay, agent: cfg.Agent, ends: map[endKey]EndStatus{},
		reconnectMax: cfg.ReconnectMax, acks: make(chan *pb.CommandAck, ackQueue), instance: newInstanceID()}
	if c.reconnectMax <= 0 {
		c.reconnectMax = DefaultReconnectMax
	}
	if c.overlay == nil {
		m, err := overlay.New(overlay.Config{Logger: logger.Named("overlay"), SpareBridges: overlay.DefaultSpareBridges})
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		c.overlay, c.ownsOverlay = m, m
	}
	if cfg.Consul != nil {
		c.services = newHostServices(cfg.Consul, logger.Named("services"), c.emit)
		c.services.set(cfg.Agent)
	}
	return c, nil
}

// RegisterHTTP adds the client's HTTP routes (none: its state is in /v1/agent/self).
func (c *Client) RegisterHTTP(mux *http.ServeMux) {}

// Status is the client's part of /v1/agent/self.
type Status struct {
	Node           string              `json:"node"`
	Connected      bool                `json:"connected"`
	Server         string              `json:"server,omitempty"`
	ConnectedSince *time.Time          `json:"connected_since,omitempty"`
	CleanedUp      bool                `json:"startup_cleanup_done"`
	UnderlayMTU    int                 `json:"underlay_mtu"`
	PendingCmds    int                 `json:"pending_commands"`
	Ends           []EndStatus         `json:"tunnel_ends"`
	HostServices   []HostServiceStatus `json:"host_services"`
}

// Status is shown in /v1/agent/self.
func (c *Client) Status() any {
	st := Status{Ends: c.activeEnds()}
	c.mu.Lock()
	st.UnderlayMTU = c.underlayMTU
	st.Node = c.agent.NodeName
	st.Server, st.Connected, st.CleanedUp = c.server, c.server != "", c.cleanedUp
	if !c.connectedSince.IsZero() {
		t := c.connectedSince
		st.ConnectedSince = &t
	}
	exec := c.exec
	c.mu.Unlock()
	if exec != nil {
		st.PendingCmds = exec.pending()
	}
	if c.services != nil {
		st.HostServices = c.services.status()
	} else {
		st.HostServices = []HostServiceStatus{}
	}
	return st
}

// Run keeps the control channel and the host services going until ctx ends. How it stops
// depends on KeepsOnStop: either the node's tunnel ends stay in the kernel and its host
// services stay registered (a restart, as for an upgrade: live connections go on and the next
// start takes the ends over), or both are removed (`nullnet leave`, or
// client.keep_tunnels_on_stop = false). Spare bridges go either way.
func (c *Client) Run(ctx context.Context) error {
	mtu := c.detectUnderlayMTU(c.agentConfig())
	c.mu.Lock()
	c.underlayMTU = mtu
	c.mu.Unlock()

	var wg sync.WaitGroup
	exec := newExecutor(ctx, c.parallel(), c.runCommand)
	if _, ok := c.overlay.(batchTeardowner); ok {
		exec.enableBatching(batchLinger, batchMax, c.runTeardowns)
	}
	c.mu.Lock()
	c.exec = exec
	c.mu.Unlock()
	if c.services != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.services.run(ctx, c.KeepsOnStop)
		}()
		if containerReplicasWanted(c.agentConfig()) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.runContainers(ctx)
			}()
		}
	}
	if c.cfg.Conn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.runControl(ctx)
		}()
	} else {
		c.logger.Warn("no server connection: the control channel is disabled")
	}
	<-ctx.Done()
	wg.Wait()
	exec.wait()

	tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.KeepsOnStop() {
		// The kernel carries these ends' connections while no agent runs. The server keeps
		// their sessions for server.node_grace_period; the next start reports the ends it
		// finds complete (Recover) and the server keeps those it still has sessions for and
		// removes the others. An agent that never comes back leaves them until the host
		// reboots or an agent starts there again.
		if n := len(c.activeEnds()); n > 0 {
			c.logger.Info("stopping with the tunnel ends left in place for the next start; `nullnet leave` removes them",
				"tunnel_ends", n)
		}
	} else {
		c.teardownAll(tctx)
	}
	if c.ownsOverlay != nil {
		// Spare bridges are kept for reuse while the agent runs; a stopped agent leaves none
		// (what a deadline cuts short, the next start-up cleanup removes).
		if n, err := c.ownsOverlay.DeleteSpares(tctx); err != nil {
			c.logger.Warn("deleting spare bridges at shutdown failed", "deleted", n, "error", err)
		} else if n > 0 {
			c.logger.Info("deleted spare bridges at shutdown", "count", n)
		}
		c.ownsOverlay.Close()
	}
	return nil
}

// Leave makes the coming stop remove the node's tunnel ends and deregister its host
// services whatever client.keep_tunnels_on_stop says (`nullnet leave`). Call it before
// cancelling Run's context.
func (c *Client) Leave() { c.leaving.Store(true) }

// KeepsOnStop reports whether a stop now would leave the tunnel ends and the Consul
// registrations in place: client.keep_tunnels_on_stop, unless Leave was called.
func (c *Client) KeepsOnStop() bool {
	return !c.leaving.Load() && c.agentConfig().Client.KeepTunnelsOnStop
}

// Reload applies a new agent configuration: host services are registered and deregistered to
// match it. The control channel and tunnel ends are unaffected.
func (c *Client) Reload(cfg *config.Config) error {
	c.mu.Lock()
	c.agent = cfg
	c.mu.Unlock()
	if c.services != nil {
		c.services.set(cfg)
		c.reloadContainers(cfg)
	}
	return nil
}

func (c *Client) nodeUnderlayMTU() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.underlayMTU
}

func (c *Client) agentConfig() *config.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agent
}

func (c *Client) parallel() int {
	if c.cfg.Parallel > 0 {
		return c.cfg.Parallel
	}
	return DefaultParallel
}

// detectUnderlayMTU is the MTU of client.network_interface, else of the interface holding
// advertise_addr; 0 when neither is found (the server then assumes 1500).
func (c *Client) detectUnderlayMTU(cfg *config.Config) int {
	if cfg.Client.NetworkInterface != "" {
		if mtu := c.overlay.InterfaceMTU(cfg.Client.NetworkInterface); mtu > 0 {
			return mtu
		}
		c.logger.Warn("client.network_interface not found; tunnel MTU falls back to 1450", "interface", cfg.Client.NetworkInterface)
		return 0
	}
	if a, err := netip.ParseAddr(cfg.AdvertiseAddr); err == nil {
		if mtu := c.overlay.UnderlayMTU(a); mtu > 0 {
			return mtu
		}
		c.logger.Warn("no interface holds advertise_addr; tunnel MTU falls back to 1450", "advertise_addr", cfg.AdvertiseAddr)
	}
	return 0
}

func (c *Client) emit(e events.Event) {
	if e.Node == "" {
		e.Node = c.agentConfig().NodeName
	}
	if c.cfg.Events != nil {
		c.cfg.Events.Emit(e)
		return
	}
	c.logger.Info("event", "kind", e.Kind, "message", e.Message)
}

// newInstanceID is 16 random hex digits.
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func sideOf(s string) overlay.Side {
	side, _ := overlay.ParseSide(s)
	return side
}
