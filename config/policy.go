package config

import "time"

// ServicePolicy holds a stack service's edge settings beyond protocol, listen_port and timeout:
// HTTPS behaviour, PROXY protocol, client allow/deny lists, per-client limits, HTTP path routes
// and health-aware closing. It travels as one JSON document: the stack mirror writes it to Consul
// KV (an allow-list of a thousand CIDRs does not fit Consul's 512-byte service meta values), every
// server reads it back beside the definition, and the port table carries it to the proxies.
//
// The zero value means "no policy": every field's zero is the documented default, so adding a
// field never changes what an older stack file means.
type ServicePolicy struct {
	// HTTPSRedirect (http services, `https_redirect = true`): plain-HTTP requests get a 308 to
	// https://<host><uri>.
	HTTPSRedirect bool `json:"https_redirect,omitempty"`
	// HSTS (http services, `hsts = "180d"`): max-age of Strict-Transport-Security on HTTPS
	// responses; 0 = no header.
	HSTS time.Duration `json:"hsts,omitempty"`
	// ACME (http services, `acme = true`): the servers obtain and renew a certificate for the
	// service's name when server.acme is configured.
	ACME bool `json:"acme,omitempty"`

	// SendProxyProtocol (`send_proxy_protocol = "v1" | "v2"`): the proxy writes a PROXY protocol
	// header carrying the client's address to the upstream ("" = none; udp and tls: "v2" only
	// for udp).
	SendProxyProtocol string `json:"send_proxy_protocol,omitempty"`
	// Allow and Deny are client CIDRs in canonical form (`allow = [...]`, `deny = [...]`); deny
	// wins, an empty Allow allows every client not denied.
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
	// MaxConnectionsPerClient bounds one client address's open connections/sessions (0 = none).
	MaxConnectionsPerClient int `json:"max_connections_per_client,omitempty"`
	// NewConnectionsPerClient is a token bucket per client address (`"20/s"`); zero = none.
	NewConnectionsPerClient Rate `json:"new_connections_per_client,omitzero"`
	// MaxSessions bounds the service's open TCP connections plus UDP sessions on each proxy
	// (0 = none).
	MaxSessions int `json:"max_sessions,omitempty"`
	// Routes (http services, `route "/api/" { ... }`): path-prefix routes, longest prefix wins.
	Routes []HTTPRoute `json:"routes,omitempty"`
	// CloseOnUnhealthy (`close_on_unhealthy = true`): open connections to a replica that Consul
	// marks critical are ended so that clients reconnect to a healthy one.
	CloseOnUnhealthy bool `json:"close_on_unhealthy,omitempty"`
}

// Rate is an event rate with a burst, written "20/s" or "600/m" in stack files.
type Rate struct {
	PerSecond float64 `json:"per_second,omitempty"`
	Burst     int     `json:"burst,omitempty"`
}

// IsZero reports whether the rate is unset (no limit).
func (r Rate) IsZero() bool { return r.PerSecond == 0 }

// HTTPRoute sends requests whose path starts with PathPrefix to Service.
type HTTPRoute struct {
	PathPrefix  string `json:"path_prefix"`
	Service     string `json:"service"`
	StripPrefix bool   `json:"strip_prefix,omitempty"`
}

// IsZero reports whether the policy sets nothing.
func (p ServicePolicy) IsZero() bool {
	return !p.HTTPSRedirect && p.HSTS == 0 && !p.ACME && p.SendProxyProtocol == "" &&
		len(p.Allow) == 0 && len(p.Deny) == 0 && p.MaxConnectionsPerClient == 0 &&
		p.NewConnectionsPerClient.IsZero() && p.MaxSessions == 0 && len(p.Routes) == 0 &&
		!p.CloseOnUnhealthy
}
