package events

import "sort"

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
	// ConsulACLDenied: Consul refused a query (403) or filtered its answer by ACLs; the last
	// good state is kept.
	ConsulACLDenied    = "consul_acl_denied"
	LeadershipAcquired = "leadership_acquired"
	LeadershipLost     = "leadership_lost"
	// LeaderElected: this server won the HA leader lock (agent/server/leader).
	LeaderElected = "leader_elected"

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

	// Certificates the proxies serve (server; see website/docs/https.md).
	CertificateInstalled  = "certificate_installed"
	CertificateRemoved    = "certificate_removed"
	CertificateExpiring   = "certificate_expiring"
	TLSCertificateInvalid = "tls_certificate_invalid"

	// Node side (client agents).
	ControlChannelEstablished = "control_channel_established"
	ControlChannelClosed      = "control_channel_closed"
	OverlaySetupCompleted     = "overlay_setup_completed"
	OverlaySetupFailed        = "overlay_setup_failed"
	OverlayTeardownCompleted  = "overlay_teardown_completed"
	OverlayTeardownFailed     = "overlay_teardown_failed"
	OverlayLeftoversRemoved   = "overlay_leftovers_removed"
	OverlayEndsRecovered      = "overlay_ends_recovered"
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
	// ClientRefused: a service's client policy (allow/deny, per-client limits, max_sessions)
	// refused a client; one per client, service and minute at most, up to 64 clients per
	// service and minute, the rest summed in ClientsRefusedSummary.
	ClientRefused         = "client_refused"
	ClientsRefusedSummary = "clients_refused_summary"
	// TLSHandshakeFailed: a client's TLS handshake on the HTTPS listener failed (no
	// certificate for its name, no SNI, no common protocol...). Aggregated per reason.
	TLSHandshakeFailed = "tls_handshake_failed"

	// Certificates (server): ACME.
	CertificateRenewed = "certificate_renewed"
	// ACMEOrderFailed: an ACME order failed; retried with backoff per domain. Aggregated per
	// domain and reason (see RemoteTriggered): a CA or a DNS answer can make it fail at will.
	ACMEOrderFailed = "acme_order_failed"
	// ConnectionsClosedUnhealthy: the proxy ended its uses of a replica Consul marks critical
	// (close_on_unhealthy); one event per replica and change, with the counts.
	ConnectionsClosedUnhealthy = "connections_closed_unhealthy"
	// TLSConnectionUnrouted: a tls (passthrough) listener closed a connection whose ClientHello
	// named no service of the port, or was missing, malformed, too large or too slow.
	// Aggregated per port and reason.
	TLSConnectionUnrouted = "tls_connection_unrouted"
)

// Spec is what an event kind carries: the keys of its Fields. website/docs/events.md lists
// exactly these for the kind (TestDocsEventFields), and every emit site in the source sets only
// these (TestEmitSitesMatchSpecs scans the source). A field that only some events of a kind carry
// (net_id, batch_size) is listed too.
type Spec struct {
	Kind   string
	Fields []string
	// Reserved kinds are declared and documented but not emitted yet.
	Reserved bool
}

// AggregateFields are the fields an Aggregator adds to the kinds it summarises: every kind in
// RemoteTriggered carries them besides the fields its emit sites set.
var AggregateFields = []string{"count", "interval"}

var sessionFields = []string{"session", "service", "client_ip", "proxy_node", "replica", "service_node", "net_id"}

func join(a []string, b ...string) []string { return append(append([]string(nil), a...), b...) }

var specs = []Spec{
	{Kind: ConfigReloaded, Fields: []string{"dir", "trigger", "stacks", "services"}},
	{Kind: ConfigReloadRejected, Fields: []string{"dir", "trigger", "diagnostics"}},
	{Kind: PortMappingConflict, Fields: []string{"service", "stack", "winner_service", "winner_stack", "protocol", "listen_port"}},
	{Kind: CatalogMirrorFailed},
	{Kind: ConsulUnreachable, Fields: []string{"error"}, Reserved: true},
	{Kind: ConsulRecovered, Reserved: true},
	{Kind: ConsulACLDenied, Fields: []string{"watch", "query", "missing_acl", "filtered"}},
	{Kind: LeadershipAcquired, Fields: []string{"lock"}},
	{Kind: LeadershipLost, Fields: []string{"lock", "server", "reason"}},
	{Kind: LeaderElected, Fields: []string{"lock", "server"}},

	{Kind: NodeConnected, Fields: []string{"underlay_addr", "roles", "version", "reconnect", "restarted"}},
	{Kind: NodeDisconnected, Fields: []string{"grace_period"}},
	{Kind: SessionCreated, Fields: join(sessionFields, "upstream", "setup_latency_ms")},
	{Kind: SessionTornDown, Fields: join(sessionFields, "reason", "lifetime_s")},
	{Kind: SessionAdopted, Fields: join(sessionFields, "upstream", "setup_latency_ms")},
	{Kind: SessionReused, Reserved: true},
	{Kind: SetupFailed, Fields: join(sessionFields, "setup_latency_ms")},
	{Kind: SetupTimedOut, Fields: join(sessionFields, "setup_latency_ms")},
	{Kind: TeardownFailed, Fields: join(sessionFields, "reason")},
	{Kind: NetIDPoolExhausted, Fields: []string{"service", "client_ip", "proxy_node"}},
	{Kind: ReplicaRemoved, Fields: []string{"service", "replica", "reason"}},
	{Kind: ProxyRequestRefused, Fields: []string{"service", "client_ip", "code"}},
	{Kind: AuthRefused, Fields: []string{"method", "peer", "reason"}},

	{Kind: CertificateInstalled, Fields: []string{"domain", "source", "not_after", "count"}},
	{Kind: CertificateRemoved, Fields: []string{"domain", "count"}},
	{Kind: CertificateExpiring, Fields: []string{"domain", "source", "not_after", "count"}},
	{Kind: TLSCertificateInvalid, Fields: []string{"domain", "dir", "reason"}},

	{Kind: ControlChannelEstablished, Fields: []string{"server"}},
	{Kind: ControlChannelClosed, Fields: []string{"error"}},
	{Kind: OverlaySetupCompleted, Fields: []string{"command_id", "net_id", "side", "duration_ms", "service", "remote_underlay", "bridge", "changed"}},
	{Kind: OverlaySetupFailed, Fields: []string{"command_id", "net_id", "side", "duration_ms", "error"}},
	{Kind: OverlayTeardownCompleted, Fields: []string{"command_id", "net_id", "side", "duration_ms", "batch_size"}},
	{Kind: OverlayTeardownFailed, Fields: []string{"command_id", "net_id", "side", "duration_ms", "batch_size", "error"}},
	{Kind: OverlayLeftoversRemoved, Fields: []string{"count"}},
	{Kind: OverlayEndsRecovered, Fields: []string{"count"}},
	{Kind: HostServiceRegistered, Fields: []string{"service", "stack", "port", "protocol"}},
	{Kind: HostServiceDeregistered, Fields: []string{"service"}},
	{Kind: HostServiceUnreachable, Fields: []string{"service", "port", "protocol", "status"}},

	{Kind: TCPListenerBindFailed, Fields: []string{"protocol", "port", "service", "error"}},
	{Kind: UDPListenerBindFailed, Fields: []string{"protocol", "port", "service", "error"}},
	{Kind: TCPUpstreamConnectFailed, Fields: []string{"service", "upstream", "client_ip", "error"}},
	{Kind: UDPUpstreamConnectFailed, Fields: []string{"service", "upstream", "client_ip", "error"}},
	{Kind: UpstreamLookupFailed, Fields: []string{"service", "client_ip", "protocol", "error"}},
	{Kind: ListenerOpened, Fields: []string{"protocol", "port", "service"}},
	{Kind: ListenerClosed, Fields: []string{"protocol", "port", "service"}},
	{Kind: UDPSessionLimitReached, Fields: []string{"port", "service", "limit"}},
	{Kind: ClientRefused, Fields: []string{"service", "protocol", "client_ip", "reason"}},
	{Kind: ClientsRefusedSummary, Fields: []string{"service", "refused", "more_clients", "interval"}},
	{Kind: TLSHandshakeFailed, Fields: []string{"reason", "server_name", "client_ip", "error"}},

	{Kind: CertificateRenewed, Fields: []string{"domain", "not_after", "source"}},
	{Kind: ACMEOrderFailed, Fields: []string{"domain", "reason"}},
	{Kind: ConnectionsClosedUnhealthy, Fields: []string{"service", "replica", "tcp_connections", "udp_sessions", "http_requests"}},
	{Kind: TLSConnectionUnrouted, Fields: []string{"port", "reason", "server_name", "client_ip"}},
}

// Specs returns every kind's spec, in the order of the documentation.
func Specs() []Spec {
	out := make([]Spec, len(specs))
	for i, s := range specs {
		s.Fields = append([]string(nil), s.Fields...)
		if _, ok := RemoteTriggered[s.Kind]; ok {
			s.Fields = append(s.Fields, AggregateFields...)
		}
		out[i] = s
	}
	return out
}

// Kinds returns every kind name, sorted.
func Kinds() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Kind
	}
	sort.Strings(out)
	return out
}

// Known reports whether kind is a declared event kind.
func Known(kind string) bool {
	for _, s := range specs {
		if s.Kind == kind {
			return true
		}
	}
	return false
}
