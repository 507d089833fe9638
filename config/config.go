// Package config holds nullnet's configuration schemas: the agent configuration (this file and
// load.go) and stack files (stack.go). Both are HCL (native or JSON syntax); every problem is an
// hcl.Diagnostic carrying file:line:col.
package config

import (
	"time"
)

// Config is the agent configuration in effect, after every file was merged and defaults applied.
// Field tags name the HCL keys; see website/docs/agent-config.md for every field.
type Config struct {
	NodeName   string `json:"node_name"`
	Datacenter string `json:"datacenter"`
	DataDir    string `json:"data_dir"`
	BindAddr   string `json:"bind_addr"`
	// ClientAddr is where the HTTP API listens, as Consul's client_addr: loopback by default,
	// because without TLS anyone who reaches the API can tear sessions down.
	ClientAddr    string `json:"client_addr"`
	AdvertiseAddr string `json:"advertise_addr"`
	LogLevel      string `json:"log_level"`
	LogJSON       bool   `json:"log_json"`
	// EnableDebug serves Go's profiler under /debug/pprof/ on the HTTP API, as Consul's
	// enable_debug does. Off by default: profiles expose internals.
	EnableDebug bool      `json:"enable_debug"`
	Ports       Ports     `json:"ports"`
	Consul      Consul    `json:"consul"`
	Server      Server    `json:"server"`
	Proxy       Proxy     `json:"proxy"`
	Client      Client    `json:"client"`
	Telemetry   Telemetry `json:"telemetry"`
	TLS         TLS       `json:"tls"`
	Limits      Limits    `json:"limits"`

	// DevMode is set by `nullnet agent -dev`, never from a file.
	DevMode bool `json:"dev_mode"`
}

// Ports are the agent's own listeners.
type Ports struct {
	HTTP int `json:"http"`
	GRPC int `json:"grpc"`
}

// Consul says how to reach the Consul agent. Empty fields fall back to the CONSUL_HTTP_*
// environment variables, as in Consul's own tools.
type Consul struct {
	Address    string `json:"address"`
	Token      string `json:"-"`
	TokenFile  string `json:"token_file"`
	Datacenter string `json:"datacenter"`
	SSL        bool   `json:"ssl"`
	CAFile     string `json:"ca_file"`
	CertFile   string `json:"cert_file"`
	KeyFile    string `json:"key_file"`
}

// Network modes for the server.
const (
	NetworkVXLAN  = "vxlan"
	NetworkDirect = "direct"
)

// Server is the control-plane role.
type Server struct {
	Enabled   bool   `json:"enabled"`
	StacksDir string `json:"stacks_dir"`
	// CertsDir holds <domain>/fullchain.pem + privkey.pem pairs the proxies serve over HTTPS
	// ("" = none). Watched like StacksDir.
	CertsDir string `json:"certs_dir"`
	// Network is "vxlan" (build tunnels on demand) or "direct" (dial replicas' own addresses).
	Network string `json:"network"`
	// SetupTimeout bounds the wait for both nodes' overlay setup acks.
	SetupTimeout time.Duration `json:"setup_timeout"`
	// NodeGracePeriod is how long a node's control channel may be gone before its sessions are
	// torn down (and, for a proxy node, its uses released).
	NodeGracePeriod time.Duration `json:"node_grace_period"`
	// OrphanGrace is how long tunnel ends that reconnecting nodes report but no session holds
	// (a restarted server) are kept for proxies to adopt before they are removed as stale.
	OrphanGrace time.Duration `json:"orphan_grace"`
	// ReloadDebounce is the quiet time after the last change in stacks_dir before a reload.
	ReloadDebounce time.Duration `json:"reload_debounce"`
	// EventBufferSize is the size of the in-memory event ring.
	EventBufferSize int `json:"event_buffer_size"`
	// NetIDMin/NetIDMax bound the net id pool.
	NetIDMin uint32 `json:"net_id_min"`
	NetIDMax uint32 `json:"net_id_max"`
	// ACME, when set (an `acme { ... }` block), makes the servers obtain and renew certificates
	// for the http services with `acme = true`; nil = off.
	ACME *ACME `json:"acme,omitempty"`
}

// ACME is the server's ACME client (server.acme).
type ACME struct {
	// Email is the account's contact address (optional; the CA sends expiry notices to it).
	Email string `json:"email"`
	// DirectoryURL is the CA's ACME directory (default Let's Encrypt production).
	DirectoryURL string `json:"directory_url"`
	// CAFile, when set, is the only root trusted for the directory's HTTPS certificate (a
	// private ACME CA such as Pebble or step-ca).
	CAFile string `json:"ca_file"`
	// Challenge is "http-01" (answered by the proxies' HTTP listener) or "tls-alpn-01" (their
	// HTTPS listener).
	Challenge string `json:"challenge"`
	// RenewBefore is the renewal window before expiry (default 30 days; at most a third of a
	// certificate's lifetime).
	RenewBefore time.Duration `json:"renew_before"`
}

// ACME defaults.
const (
	DefaultACMEDirectory   = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultACMEChallenge   = "http-01"
	DefaultACMERenewBefore = 30 * 24 * time.Hour
)

// Proxy is the ingress role.
type Proxy struct {
	Enabled bool `json:"enabled"`
	// Servers are gRPC addresses of nullnet servers; empty means discover through Consul.
	Servers  []string `json:"servers"`
	HTTPAddr string   `json:"http_addr"`
	// HTTPSAddr is the TLS listener for HTTP services (certificates chosen by SNI); "" turns
	// it off.
	HTTPSAddr string `json:"https_addr"`
	// BindAddr is the address TCP/UDP listeners bind (default all addresses).
	BindAddr string `json:"bind_addr"`
	// DialTimeout bounds the connect to an upstream.
	DialTimeout time.Duration `json:"dial_timeout"`
	// UDPIdleTimeout applies to UDP sessions of mappings whose timeout is 0.
	UDPIdleTimeout time.Duration `json:"udp_idle_timeout"`
	// UDPMaxSessions caps sessions per UDP listener.
	UDPMaxSessions int `json:"udp_max_sessions"`
	// UDPQueueLength caps datagrams held for a session that is still resolving.
	UDPQueueLength int `json:"udp_queue_length"`
	// UDPReceiveBuffer is the receive buffer (SO_RCVBUF, bytes) of each UDP listener; 0 keeps
	// the kernel's default.
	UDPReceiveBuffer int `json:"udp_receive_buffer"`
	// UDPNewSessionRate and UDPNewSessionRatePerPrefix bound how many new UDP sessions a
	// listener starts per second, in all and per source /24 (IPv4) or /64 (IPv6); 0 = no limit.
	UDPNewSessionRate          int `json:"udp_new_session_rate"`
	UDPNewSessionRatePerPrefix int `json:"udp_new_session_rate_per_prefix"`
	// UseLinger is how long the proxy keeps a client's shared server use after its last
	// connection, session or request ended; 0 turns use sharing off (one use per connection).
	UseLinger time.Duration `json:"use_linger"`
	// DrainTimeout bounds the drain on SIGTERM or `nullnet leave`: listeners stop accepting and
	// open connections and requests get this long to finish; 0 stops at once.
	DrainTimeout time.Duration `json:"drain_timeout"`
	// ProxyProtocolFrom lists the front load balancers (CIDRs or addresses) whose TCP
	// connections and UDP datagrams start with a PROXY protocol header carrying the client's
	// address. Peers outside it are clients themselves: a header they send is data.
	ProxyProtocolFrom []string `json:"proxy_protocol_from,omitempty"`
	// AccessLog is where the HTTP router writes one line per request: "off", "on" (the agent's
	// log, logger proxy.access) or an absolute file path (lines appended; reopened on reload).
	AccessLog string `json:"access_log"`
}

// Client is the node role: tunnel ends and host services.
type Client struct {
	Enabled  bool          `json:"enabled"`
	Servers  []string      `json:"servers"`
	Services []HostService `json:"services"`
	// Containers are Docker containers named as replicas (see agent/containers).
	Containers []ContainerReplica `json:"containers"`
	// NetworkInterface carries the underlay (default: the one holding advertise_addr).
	NetworkInterface string `json:"network_interface"`
	// KeepTunnelsOnStop leaves the node's tunnel ends and Consul registrations in place when
	// the agent stops (SIGTERM, SIGINT: a restart for an upgrade), so that live connections go
	// on and the next start takes them over; `nullnet leave` removes them whatever this says.
	KeepTunnelsOnStop bool `json:"keep_tunnels_on_stop"`
}

// ContainerReplica names a Docker container as a replica of a service, for containers that
// carry no nullnet.* labels (client { container "redis-1" { service = "..." port = 6379 } }).
type ContainerReplica struct {
	Name     string `json:"name"` // the container's name
	Service  string `json:"service"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Stack    string `json:"stack"`
}

// HostService is a service running on this host that the agent registers in Consul.
type HostService struct {
	Name     string `json:"name"`
	Stack    string `json:"stack"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	// Address the service listens on, if not all addresses; used for the health check.
	Address string `json:"address"`
	// CheckInterval is how often Consul probes the port.
	CheckInterval time.Duration `json:"check_interval"`
}

// Telemetry configures metrics.
type Telemetry struct {
	// PrometheusRetentionTime > 0 enables the Prometheus format on /v1/agent/metrics.
	PrometheusRetentionTime time.Duration `json:"prometheus_retention_time"`
	DisableHostname         bool          `json:"disable_hostname"`
	StatsdAddress           string        `json:"statsd_address"`
}

// TLS configures mutual TLS for gRPC and the HTTP API, with Consul's meanings.
type TLS struct {
	CAFile               string `json:"ca_file"`
	CertFile             string `json:"cert_file"`
	KeyFile              string `json:"key_file"`
	VerifyIncoming       bool   `json:"verify_incoming"`
	VerifyOutgoing       bool   `json:"verify_outgoing"`
	VerifyServerHostname bool   `json:"verify_server_hostname"`
}

// Limits bound what callers of the HTTP API can hold, like Consul's limits block: every idle or
// slow connection costs a file descriptor the data plane needs.
type Limits struct {
	// HTTPMaxConnsPerClient caps concurrent HTTP API connections from one IP address.
	HTTPMaxConnsPerClient int `json:"http_max_conns_per_client"`
	// HTTPMaxConns caps concurrent HTTP API connections in total.
	HTTPMaxConns int `json:"http_max_conns"`
	// HTTPReadTimeout bounds reading one request, headers and body.
	HTTPReadTimeout time.Duration `json:"http_read_timeout"`
	// HTTPWriteTimeout bounds writing one response; blocking queries get their wait on top.
	HTTPWriteTimeout time.Duration `json:"http_write_timeout"`
	// HTTPIdleTimeout closes keep-alive connections idle for this long.
	HTTPIdleTimeout time.Duration `json:"http_idle_timeout"`
	// GRPCMaxConcurrentStreams caps concurrent gRPC streams on one connection (servers).
	GRPCMaxConcurrentStreams int `json:"grpc_max_concurrent_streams"`
	// GRPCMaxStreamsPerClient caps concurrent gRPC calls from one IP address, across its
	// connections (servers).
	GRPCMaxStreamsPerClient int `json:"grpc_max_streams_per_client"`
}

// Enabled reports whether any TLS material is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.CAFile != "" }

// Roles lists the enabled roles, in a fixed order. The proxy role brings the client role along,
// because the proxy's end of each tunnel is built on its own host.
func (c *Config) Roles() []string {
	var r []string
	if c.Server.Enabled {
		r = append(r, "server")
	}
	if c.Client.Enabled || c.Proxy.Enabled {
		r = append(r, "client")
	}
	if c.Proxy.Enabled {
		r = append(r, "proxy")
	}
	return r
}

// Defaults, applied in exactly one place (Default and applyDefaults in load.go).
const (
	DefaultHTTPPort   = 4700
	DefaultGRPCPort   = 4701
	DefaultDatacenter = "dc1"
	DefaultLogLevel   = "info"
	DefaultBindAddr   = "0.0.0.0"
	DefaultClientAddr = "127.0.0.1"
	// HTTP API limits (limits block).
	DefaultHTTPMaxConnsPerClient    = 200
	DefaultHTTPMaxConns             = 1024
	DefaultHTTPReadTimeout          = 30 * time.Second
	DefaultHTTPWriteTimeout         = 30 * time.Second
	DefaultHTTPIdleTimeout          = 60 * time.Second
	DefaultGRPCMaxConcurrentStreams = 1024
	DefaultGRPCMaxStreamsPerClient  = 4096
	DefaultProxyHTTPAddr            = ":80"
	DefaultProxyHTTPSAddr           = ":443"
	DefaultSetupTimeout             = 10 * time.Second
	DefaultNodeGrace                = 15 * time.Second
	DefaultOrphanGrace              = 60 * time.Second
	DefaultReloadDebounce           = 100 * time.Millisecond
	DefaultEventBufferSize          = 4096
	DefaultNetIDMin                 = 101
	DefaultNetIDMax                 = 2097151
	DefaultDialTimeout              = 5 * time.Second
	DefaultUDPIdleTimeout           = 60 * time.Second
	DefaultUDPMaxSessions           = 200000
	DefaultUDPQueueLength           = 64
	DefaultUseLinger                = time.Second
	DefaultDrainTimeout             = 30 * time.Second
	DefaultAccessLog                = AccessLogOff
	// DefaultUDPReceiveBuffer is 8 MiB: a second of a 100,000 datagram/s flood of small
	// datagrams fits, where the kernel default (208 KiB) overflows within milliseconds.
	DefaultUDPReceiveBuffer           = 8 << 20
	DefaultUDPNewSessionRate          = 1000
	DefaultUDPNewSessionRatePerPrefix = 250
	DefaultCheckInterval              = 5 * time.Second
	DefaultPromRetention              = 60 * time.Second
)
