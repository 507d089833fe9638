package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// MaxNetID is the last net id whose /29 fits in 10.0.0.0/8.
const MaxNetID = 2097151

// Validate checks values that decoding cannot: enumerations, ranges, addresses. ranges maps
// dotted keys (see collectRanges) to where the value was set; a value that came from a default
// has no range.
func Validate(c *Config, ranges map[string]*hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	at := func(key string) *hcl.Range { return ranges[key] }
	switch strings.ToLower(c.LogLevel) {
	case "trace", "debug", "info", "warn", "error", "off":
	default:
		diags = append(diags, errAt(at("log_level"), "Invalid log_level",
			"%q is not a log level; use one of trace, debug, info, warn, error.", c.LogLevel))
	}
	if net.ParseIP(c.BindAddr) == nil {
		diags = append(diags, errAt(at("bind_addr"), "Invalid bind_addr", "%q is not an IP address.", c.BindAddr))
	}
	if net.ParseIP(c.ClientAddr) == nil {
		diags = append(diags, errAt(at("client_addr"), "Invalid client_addr", "%q is not an IP address.", c.ClientAddr))
	}
	for key, n := range map[string]int{"limits.http_max_conns_per_client": c.Limits.HTTPMaxConnsPerClient,
		"limits.http_max_conns": c.Limits.HTTPMaxConns, "limits.grpc_max_concurrent_streams": c.Limits.GRPCMaxConcurrentStreams,
		"limits.grpc_max_streams_per_client": c.Limits.GRPCMaxStreamsPerClient} {
		if n < 1 {
			diags = append(diags, errAt(at(key), "Invalid connection limit", "%s = %d: it must be at least 1.", key, n))
		}
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		diags = append(diags, errAt(at("advertise_addr"), "Invalid advertise_addr",
			"%q is not an IP address; it is the underlay address tunnels use.", c.AdvertiseAddr))
	}
	for key, p := range map[string]int{"ports.http": c.Ports.HTTP, "ports.grpc": c.Ports.GRPC} {
		if p < 1 || p > 65535 {
			diags = append(diags, errAt(at(key), "Invalid port", "%s = %d is out of range 1-65535.", key, p))
		}
	}
	if c.Ports.HTTP == c.Ports.GRPC {
		diags = append(diags, errAt(at("ports.grpc"), "Port clash", "ports.http and ports.grpc are both %d.", c.Ports.HTTP))
	}
	if c.Server.Network != NetworkVXLAN && c.Server.Network != NetworkDirect {
		diags = append(diags, errAt(at("server.network"), "Invalid server.network",
			"%q is not a network mode; use \"vxlan\" (tunnels on demand) or \"direct\" (dial replicas' addresses).", c.Server.Network))
	}
	if c.Server.Enabled && c.Server.StacksDir == "" && !c.DevMode {
		diags = append(diags, errAt(at("server.enabled"), "Missing server.stacks_dir",
			"A server needs stacks_dir, the directory holding its *.hcl stack files."))
	}
	if c.Server.NetIDMin < DefaultNetIDMin || c.Server.NetIDMax > MaxNetID || c.Server.NetIDMin > c.Server.NetIDMax {
		diags = append(diags, errAt(at("server.net_id_min"), "Invalid net id range",
			"net ids must satisfy %d <= net_id_min <= net_id_max <= %d (got %d..%d).",
			DefaultNetIDMin, MaxNetID, c.Server.NetIDMin, c.Server.NetIDMax))
	}
	diags = append(diags, validateACME(c.Server.ACME, at)...)
	if c.Server.EventBufferSize < 1 {
		diags = append(diags, errAt(at("server.event_buffer_size"), "Invalid event_buffer_size", "It must be at least 1."))
	}
	if c.Proxy.Enabled {
		if _, _, err := net.SplitHostPort(c.Proxy.HTTPAddr); err != nil {
			diags = append(diags, errAt(at("proxy.http_addr"), "Invalid proxy.http_addr",
				"%q is not host:port (%v); for example \":80\".", c.Proxy.HTTPAddr, err))
		}
		if c.Proxy.HTTPSAddr != "" {
			if _, _, err := net.SplitHostPort(c.Proxy.HTTPSAddr); err != nil {
				diags = append(diags, errAt(at("proxy.https_addr"), "Invalid proxy.https_addr",
					"%q is not host:port (%v); for example \":443\", or \"\" to turn HTTPS off.", c.Proxy.HTTPSAddr, err))
			} else if c.Proxy.HTTPSAddr == c.Proxy.HTTPAddr {
				diags = append(diags, errAt(at("proxy.https_addr"), "Conflicting proxy.https_addr",
					"%q is also proxy.http_addr; the two listeners need different addresses.", c.Proxy.HTTPSAddr))
			}
		}
		if net.ParseIP(c.Proxy.BindAddr) == nil {
			diags = append(diags, errAt(at("proxy.bind_addr"), "Invalid proxy.bind_addr", "%q is not an IP address.", c.Proxy.BindAddr))
		}
	}
	diags = append(diags, validateAccessLog(c.Proxy.AccessLog, at("proxy.access_log"))...)
	if c.Proxy.UDPMaxSessions < 1 {
		diags = append(diags, errAt(at("proxy.udp_max_sessions"), "Invalid udp_max_sessions", "It must be at least 1."))
	}
	if c.Proxy.UDPQueueLength < 1 {
		diags = append(diags, errAt(at("proxy.udp_queue_length"), "Invalid udp_queue_length", "It must be at least 1."))
	}
	if c.Proxy.UDPReceiveBuffer < 0 || c.Proxy.UDPReceiveBuffer > 1<<30 {
		diags = append(diags, errAt(at("proxy.udp_receive_buffer"), "Invalid udp_receive_buffer",
			"It must be between 0 (the kernel's default) and 1073741824 bytes."))
	}
	for _, r := range []struct {
		key string
		v   int
	}{{"udp_new_session_rate", c.Proxy.UDPNewSessionRate}, {"udp_new_session_rate_per_prefix", c.Proxy.UDPNewSessionRatePerPrefix}} {
		if r.v < 0 {
			diags = append(diags, errAt(at("proxy."+r.key), "Invalid "+r.key, "It must be 0 (no limit) or more."))
		}
	}
	if _, err := ParsePrefixes(c.Proxy.ProxyProtocolFrom); err != nil {
		diags = append(diags, errAt(at("proxy.proxy_protocol_from"), "Invalid proxy_protocol_from",
			"%v; use CIDRs such as \"10.0.0.0/8\" or single addresses.", err))
	}
	for _, addr := range append(append([]string{}, c.Proxy.Servers...), c.Client.Servers...) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			diags = append(diags, errAt(nil, "Invalid server address", "%q is not host:port: %v.", addr, err))
		}
	}
	for _, s := range c.Client.Services {
		key := "client.service." + s.Name + "."
		def := at("client.service." + s.Name)
		if s.Port < 1 || s.Port > 65535 {
			rng := at(key + "port")
			if rng == nil {
				rng = def
			}
			diags = append(diags, errAt(rng, "Invalid host service port",
				"service %q: port = %d is out of range 1-65535.", s.Name, s.Port))
		}
		if s.Protocol != "tcp" && s.Protocol != "udp" {
			diags = append(diags, errAt(at(key+"protocol"), "Invalid host service protocol",
				"service %q: protocol %q is not \"tcp\" or \"udp\".", s.Name, s.Protocol))
		}
		if s.Stack == "" {
			diags = append(diags, errAt(def, "Missing host service stack",
				"service %q: stack is required: it names the stack that exposes this service.", s.Name))
		}
		if s.Address != "" {
			ip := net.ParseIP(s.Address)
			switch {
			case ip == nil:
				diags = append(diags, errAt(at(key+"address"), "Invalid host service address", "%q is not an IP address.", s.Address))
			case ip.IsLoopback():
				diags = append(diags, warnAt(at(key+"address"), "Host service listens on loopback only",
					"service %q listens on %s, which the overlay cannot reach: tunnels deliver to the host's bridge address. Listen on 0.0.0.0 instead.", s.Name, s.Address))
			}
		}
	}
	for _, ct := range c.Client.Containers {
		key := "client.container." + ct.Name + "."
		def := at("client.container." + ct.Name)
		if !ValidServiceName(ct.Service) {
			rng := at(key + "service")
			if rng == nil {
				rng = def
			}
			diags = append(diags, errAt(rng, "Invalid container service",
				"container %q: service = %q must be a DNS name; it names the service this container is a replica of.", ct.Name, ct.Service))
		}
		if ct.Port < 1 || ct.Port > 65535 {
			rng := at(key + "port")
			if rng == nil {
				rng = def
			}
			diags = append(diags, errAt(rng, "Invalid container port",
				"container %q: port = %d is out of range 1-65535.", ct.Name, ct.Port))
		}
		switch ct.Protocol {
		case "tcp", "udp", "http", "tls":
		default:
			diags = append(diags, errAt(at(key+"protocol"), "Invalid container protocol",
				"container %q: protocol %q is not \"tcp\", \"udp\", \"http\" or \"tls\".", ct.Name, ct.Protocol))
		}
	}
	return diags
}

// duplicateServices rejects two `service` blocks with one name in the same file.
func duplicateServices(c *rawClient) hcl.Diagnostics {
	if c == nil {
		return nil
	}
	var diags hcl.Diagnostics
	seen := map[string]hcl.Range{}
	for _, s := range c.Services {
		if first, ok := seen[s.Name]; ok {
			rng := s.DeclRange
			diags = append(diags, errAt(&rng, "Duplicate host service",
				"service %q is already declared at %s.", s.Name, first.String()))
			continue
		}
		seen[s.Name] = s.DeclRange
	}
	seenC := map[string]hcl.Range{}
	for _, ct := range c.Containers {
		if first, ok := seenC[ct.Name]; ok {
			rng := ct.DeclRange
			diags = append(diags, errAt(&rng, "Duplicate container",
				"container %q is already declared at %s.", ct.Name, first.String()))
			continue
		}
		seenC[ct.Name] = ct.DeclRange
	}
	return diags
}

// FormatDiagnostics renders diagnostics as one string (for logs and events).
func FormatDiagnostics(files map[string]*hcl.File, diags hcl.Diagnostics) string {
	var b strings.Builder
	if err := WriteDiagnostics(&b, files, diags); err != nil {
		return fmt.Sprint(diags)
	}
	return b.String()
}

// validateACME checks server.acme (nil = off).
func validateACME(a *ACME, at func(string) *hcl.Range) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	var diags hcl.Diagnostics
	if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
		diags = append(diags, errAt(at("server.acme.directory_url"), "Invalid server.acme.directory_url",
			"%q is not an https:// URL of an ACME directory, e.g. %q.", a.DirectoryURL, DefaultACMEDirectory))
	}
	if a.Challenge != "http-01" && a.Challenge != "tls-alpn-01" {
		diags = append(diags, errAt(at("server.acme.challenge"), "Invalid server.acme.challenge",
			"%q is not a challenge type; use \"http-01\" (answered on the proxies' HTTP listener) or \"tls-alpn-01\" (their HTTPS listener).", a.Challenge))
	}
	if a.RenewBefore < time.Hour {
		diags = append(diags, errAt(at("server.acme.renew_before"), "Invalid server.acme.renew_before",
			"%s is too short; renew at least an hour before expiry (default %s).", a.RenewBefore, DefaultACMERenewBefore))
	}
	if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t\n<>")) {
		diags = append(diags, errAt(at("server.acme.email"), "Invalid server.acme.email", "%q is not an e-mail address.", a.Email))
	}
	if a.CAFile != "" {
		if _, err := os.Stat(a.CAFile); err != nil {
			diags = append(diags, errAt(at("server.acme.ca_file"), "Invalid server.acme.ca_file", "%v.", err))
		}
	}
	return diags
}
