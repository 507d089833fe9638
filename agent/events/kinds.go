package events

// Event kinds. Every kind nullnet emits is declared here (and documented in
// website/docs/events.md; a test checks that). Add new kinds to this list.
const (
	// Configuration (server).
	ConfigReloaded       = "config_reloaded"
	ConfigReloadRejected = "config_reload_rejected"
	PortMappingConflict  = "port_mapping_conflict"
	CatalogMirrorFailed  = "catalog_mirror_failed"
	ConsulUnreachable    = "consul_unreachable"
	ConsulRecovered      = "consul_recovered"
	LeadershipAcquired   = "leadership_acquired"
	LeadershipLost       = "leadership_lost"

	// Nodes and sessions (server).
	NodeConnected       = "node_connected"
	NodeDisconnected    = "node_disconnected"
	SessionCreated      = "session_created"
	SessionTornDown     = "session_torn_down"
	SessionAdopted      = "session_adopted"
	SessionReused       = "session_reused"
	SetupFailed         = "setup_failed"
	SetupTimedOut       = "setup_timed_out"
	TeardownFailed      = "teardown_failed"
	NetIDPoolExhausted  = "net_id_pool_exhausted"
	ReplicaRemoved      = "replica_removed"
	ProxyRequestRefused = "proxy_request_refused"
	// AuthRefused: a gRPC or HTTPS API caller's certificate did not allow what it asked (mutual
	// TLS). Aggregated per caller address and reason (see RemoteTriggered).
	AuthRefused = "auth_refused"

	// Node side (client agents).
	ControlChannelEstablished = "control_channel_established"
	ControlChannelClosed      = "control_channel_closed"
	OverlaySetupCompleted     = "overlay_setup_completed"
	OverlaySetupFailed        = "overlay_setup_failed"
	OverlayTeardownCompleted  = "overlay_teardown_completed"
	OverlayTeardownFailed     = "overlay_teardown_failed"
	OverlayLeftoversRemoved   = "overlay_leftovers_removed"
	HostServiceRegistered     = "host_service_registered"
	HostServiceDeregistered   = "host_service_deregistered"
	HostServiceUnreachable    = "host_service_unreachable"

	// Proxy agents.
	TCPListenerBindFailed    = "tcp_listener_bind_failed"
	UDPListenerBindFailed    = "udp_listener_bind_failed"
	TCPUpstreamConnectFailed = "tcp_upstream_connect_failed"
	UDPUpstreamConnectFailed = "udp_upstream_connect_failed"
	UpstreamLookupFailed     = "upstream_lookup_failed"
	ListenerOpened           = "listener_opened"
	ListenerClosed           = "listener_closed"
	UDPSessionLimitReached   = "udp_session_limit_reached"
)
