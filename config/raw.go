package config

import "github.com/hashicorp/hcl/v2"

// The raw* types mirror one configuration file. Pointers tell "unset" from "zero" so that a later
// file overrides only what it sets; gohcl reports unknown keys and wrong types with positions.

type rawConfig struct {
	NodeName      *string       `hcl:"node_name,optional"`
	Datacenter    *string       `hcl:"datacenter,optional"`
	DataDir       *string       `hcl:"data_dir,optional"`
	BindAddr      *string       `hcl:"bind_addr,optional"`
	ClientAddr    *string       `hcl:"client_addr,optional"`
	AdvertiseAddr *string       `hcl:"advertise_addr,optional"`
	LogLevel      *string       `hcl:"log_level,optional"`
	LogJSON       *bool         `hcl:"log_json,optional"`
	EnableDebug   *bool         `hcl:"enable_debug,optional"`
	Ports         *rawPorts     `hcl:"ports,block"`
	Consul        *rawConsul    `hcl:"consul,block"`
	Server        *rawServer    `hcl:"server,block"`
	Proxy         *rawProxy     `hcl:"proxy,block"`
	Client        *rawClient    `hcl:"client,block"`
	Telemetry     *rawTelemetry `hcl:"telemetry,block"`
	TLS           *rawTLS       `hcl:"tls,block"`
	Limits        *rawLimits    `hcl:"limits,block"`
}

type rawLimits struct {
	HTTPMaxConnsPerClient    *int           `hcl:"http_max_conns_per_client,optional"`
	HTTPMaxConns             *int           `hcl:"http_max_conns,optional"`
	HTTPReadTimeout          *hcl.Attribute `hcl:"http_read_timeout,optional"`
	HTTPWriteTimeout         *hcl.Attribute `hcl:"http_write_timeout,optional"`
	HTTPIdleTimeout          *hcl.Attribute `hcl:"http_idle_timeout,optional"`
	GRPCMaxConcurrentStreams *int           `hcl:"grpc_max_concurrent_streams,optional"`
	GRPCMaxStreamsPerClient  *int           `hcl:"grpc_max_streams_per_client,optional"`
}

type rawPorts struct {
	HTTP *int `hcl:"http,optional"`
	GRPC *int `hcl:"grpc,optional"`
}

type rawConsul struct {
	Address    *string `hcl:"address,optional"`
	Token      *string `hcl:"token,optional"`
	TokenFile  *string `hcl:"token_file,optional"`
	Datacenter *string `hcl:"datacenter,optional"`
	SSL        *bool   `hcl:"ssl,optional"`
	CAFile     *string `hcl:"ca_file,optional"`
	CertFile   *string `hcl:"cert_file,optional"`
	KeyFile    *string `hcl:"key_file,optional"`
}

type rawServer struct {
	Enabled         *bool          `hcl:"enabled,optional"`
	StacksDir       *string        `hcl:"stacks_dir,optional"`
	CertsDir        *string        `hcl:"certs_dir,optional"`
	Network         *hcl.Attribute `hcl:"network,optional"`
	SetupTimeout    *hcl.Attribute `hcl:"setup_timeout,optional"`
	NodeGracePeriod *hcl.Attribute `hcl:"node_grace_period,optional"`
	OrphanGrace     *hcl.Attribute `hcl:"orphan_grace,optional"`
	ReloadDebounce  *hcl.Attribute `hcl:"reload_debounce,optional"`
	EventBufferSize *int           `hcl:"event_buffer_size,optional"`
	NetIDMin        *uint32        `hcl:"net_id_min,optional"`
	NetIDMax        *uint32        `hcl:"net_id_max,optional"`
	ACME            *rawACME       `hcl:"acme,block"`
}

type rawACME struct {
	Email        *string        `hcl:"email,optional"`
	DirectoryURL *string        `hcl:"directory_url,optional"`
	CAFile       *string        `hcl:"ca_file,optional"`
	Challenge    *string        `hcl:"challenge,optional"`
	RenewBefore  *hcl.Attribute `hcl:"renew_before,optional"`
}

type rawProxy struct {
	Enabled        *bool          `hcl:"enabled,optional"`
	Servers        *[]string      `hcl:"servers,optional"`
	HTTPAddr       *string        `hcl:"http_addr,optional"`
	HTTPSAddr      *string        `hcl:"https_addr,optional"`
	BindAddr       *string        `hcl:"bind_addr,optional"`
	DialTimeout    *hcl.Attribute `hcl:"dial_timeout,optional"`
	UDPIdleTimeout *hcl.Attribute `hcl:"udp_idle_timeout,optional"`
	UDPMaxSessions *int           `hcl:"udp_max_sessions,optional"`
	UDPQueueLength *int           `hcl:"udp_queue_length,optional"`
	UseLinger      *hcl.Attribute `hcl:"use_linger,optional"`
	DrainTimeout   *hcl.Attribute `hcl:"drain_timeout,optional"`
	AccessLog      *string        `hcl:"access_log,optional"`

	UDPReceiveBuffer           *int `hcl:"udp_receive_buffer,optional"`
	UDPNewSessionRate          *int `hcl:"udp_new_session_rate,optional"`
	UDPNewSessionRatePerPrefix *int `hcl:"udp_new_session_rate_per_prefix,optional"`

	ProxyProtocolFrom *[]string `hcl:"proxy_protocol_from,optional"`
}

type rawClient struct {
	Enabled           *bool            `hcl:"enabled,optional"`
	Servers           *[]string        `hcl:"servers,optional"`
	NetworkInterface  *string          `hcl:"network_interface,optional"`
	KeepTunnelsOnStop *bool            `hcl:"keep_tunnels_on_stop,optional"`
	Services          []rawHostService `hcl:"service,block"`
	Containers        []rawContainer   `hcl:"container,block"`
}

type rawContainer struct {
	Name      string    `hcl:"name,label"`
	Service   *string   `hcl:"service,optional"`
	Port      *int      `hcl:"port,optional"`
	Protocol  *string   `hcl:"protocol,optional"`
	Stack     *string   `hcl:"stack,optional"`
	DeclRange hcl.Range `hcl:",def_range"`
}

type rawHostService struct {
	Name          string         `hcl:"name,label"`
	Stack         *string        `hcl:"stack,optional"`
	Port          *int           `hcl:"port,optional"`
	Protocol      *string        `hcl:"protocol,optional"`
	Address       *string        `hcl:"address,optional"`
	CheckInterval *hcl.Attribute `hcl:"check_interval,optional"`
	DeclRange     hcl.Range      `hcl:",def_range"`
}

type rawTelemetry struct {
	PrometheusRetentionTime *hcl.Attribute `hcl:"prometheus_retention_time,optional"`
	DisableHostname         *bool          `hcl:"disable_hostname,optional"`
	StatsdAddress           *string        `hcl:"statsd_address,optional"`
}

type rawTLS struct {
	CAFile               *string `hcl:"ca_file,optional"`
	CertFile             *string `hcl:"cert_file,optional"`
	KeyFile              *string `hcl:"key_file,optional"`
	VerifyIncoming       *bool   `hcl:"verify_incoming,optional"`
	VerifyOutgoing       *bool   `hcl:"verify_outgoing,optional"`
	VerifyServerHostname *bool   `hcl:"verify_server_hostname,optional"`
}
