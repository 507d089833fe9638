package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// merger folds raw files into one Config, remembering where each value was last set so that
// validation can point at it.
type merger struct {
	cfg    Config
	ranges map[string]*hcl.Range
}

func newMerger() *merger {
	m := &merger{ranges: map[string]*hcl.Range{}}
	presetDefaults(&m.cfg)
	return m
}

// applyDev sets the -dev defaults before any file, so files still override them.
func (m *merger) applyDev() {
	m.cfg.Server.Enabled = true
	m.cfg.Server.Network = NetworkDirect
	m.cfg.Proxy.Enabled = true
	m.cfg.Client.Enabled = true
	m.cfg.AdvertiseAddr = "127.0.0.1"
	m.cfg.BindAddr = "127.0.0.1"
	m.cfg.ClientAddr = "127.0.0.1"
	m.cfg.Proxy.HTTPAddr = "127.0.0.1:8080"
	m.cfg.Proxy.HTTPSAddr = "127.0.0.1:8443"
	m.cfg.Proxy.BindAddr = "127.0.0.1"
	m.cfg.Proxy.Servers = []string{"127.0.0.1:4701"}
	m.cfg.Client.Servers = []string{"127.0.0.1:4701"}
	// A dev agent is stopped for good: it leaves nothing behind.
	m.cfg.Client.KeepTunnelsOnStop = false
}

// blockTypes maps a block path to its raw type, for collecting attribute ranges.
var blockTypes = map[string]any{
	"":          rawConfig{},
	"ports":     rawPorts{},
	"consul":    rawConsul{},
	"server":    rawServer{},
	"acme":      rawACME{},
	"proxy":     rawProxy{},
	"client":    rawClient{},
	"telemetry": rawTelemetry{},
	"tls":       rawTLS{},
	"limits":    rawLimits{},
	"service":   rawHostService{},
	"container": rawContainer{},
}

// collectRanges records the range of every attribute value in body under dotted keys such as
// "server.network" or "client.service.sshd.port". Works for native and JSON syntax alike.
func collectRanges(body hcl.Body, prefix, typ string, out map[string]*hcl.Range) {
	schema, _ := gohcl.ImpliedBodySchema(blockTypes[typ])
	content, _, _ := body.PartialContent(schema)
	if content == nil {
		return
	}
	for name, a := range content.Attributes {
		out[prefix+name] = a.Expr.Range().Ptr()
	}
	for _, b := range content.Blocks {
		p := prefix + b.Type + "."
		if len(b.Labels) > 0 {
			p += b.Labels[0] + "."
			out[prefix+b.Type+"."+b.Labels[0]] = b.DefRange.Ptr()
		}
		collectRanges(b.Body, p, b.Type, out)
	}
}

func (m *merger) merge(r *rawConfig) hcl.Diagnostics {
	var diags hcl.Diagnostics
	c := &m.cfg
	pick(&c.NodeName, r.NodeName)
	pick(&c.Datacenter, r.Datacenter)
	pick(&c.DataDir, r.DataDir)
	pick(&c.BindAddr, r.BindAddr)
	pick(&c.ClientAddr, r.ClientAddr)
	pick(&c.AdvertiseAddr, r.AdvertiseAddr)
	pick(&c.LogLevel, r.LogLevel)
	pick(&c.LogJSON, r.LogJSON)
	pick(&c.EnableDebug, r.EnableDebug)
	if p := r.Ports; p != nil {
		pick(&c.Ports.HTTP, p.HTTP)
		pick(&c.Ports.GRPC, p.GRPC)
	}
	if x := r.Consul; x != nil {
		pick(&c.Consul.Address, x.Address)
		pick(&c.Consul.Token, x.Token)
		pick(&c.Consul.TokenFile, x.TokenFile)
		pick(&c.Consul.Datacenter, x.Datacenter)
		pick(&c.Consul.SSL, x.SSL)
		pick(&c.Consul.CAFile, x.CAFile)
		pick(&c.Consul.CertFile, x.CertFile)
		pick(&c.Consul.KeyFile, x.KeyFile)
	}
	if s := r.Server; s != nil {
		pick(&c.Server.Enabled, s.Enabled)
		pick(&c.Server.StacksDir, s.StacksDir)
		pick(&c.Server.CertsDir, s.CertsDir)
		if s.Network != nil {
			v, d := StringAttr(s.Network)
			diags = append(diags, d...)
			c.Server.Network = v
		}
		diags = append(diags, pickDur(&c.Server.SetupTimeout, s.SetupTimeout)...)
		diags = append(diags, pickDur(&c.Server.NodeGracePeriod, s.NodeGracePeriod)...)
		diags = append(diags, pickDur(&c.Server.OrphanGrace, s.OrphanGrace)...)
		diags = append(diags, pickDur(&c.Server.ReloadDebounce, s.ReloadDebounce)...)
		pick(&c.Server.EventBufferSize, s.EventBufferSize)
		pick(&c.Server.NetIDMin, s.NetIDMin)
		pick(&c.Server.NetIDMax, s.NetIDMax)
		if a := s.ACME; a != nil {
			if c.Server.ACME == nil {
				c.Server.ACME = &ACME{DirectoryURL: DefaultACMEDirectory, Challenge: DefaultACMEChallenge,
					RenewBefore: DefaultACMERenewBefore}
			}
			pick(&c.Server.ACME.Email, a.Email)
			pick(&c.Server.ACME.DirectoryURL, a.DirectoryURL)
			pick(&c.Server.ACME.CAFile, a.CAFile)
			pick(&c.Server.ACME.Challenge, a.Challenge)
			diags = append(diags, pickDur(&c.Server.ACME.RenewBefore, a.RenewBefore)...)
		}
	}
	if p := r.Proxy; p != nil {
		pick(&c.Proxy.Enabled, p.Enabled)
		pick(&c.Proxy.Servers, p.Servers)
		pick(&c.Proxy.HTTPAddr, p.HTTPAddr)
		pick(&c.Proxy.HTTPSAddr, p.HTTPSAddr)
		pick(&c.Proxy.BindAddr, p.BindAddr)
		diags = append(diags, pickDur(&c.Proxy.DialTimeout, p.DialTimeout)...)
		diags = append(diags, pickDur(&c.Proxy.UDPIdleTimeout, p.UDPIdleTimeout)...)
		pick(&c.Proxy.UDPMaxSessions, p.UDPMaxSessions)
		pick(&c.Proxy.UDPQueueLength, p.UDPQueueLength)
		diags = append(diags, pickDur(&c.Proxy.UseLinger, p.UseLinger)...)
		diags = append(diags, pickDur(&c.Proxy.DrainTimeout, p.DrainTimeout)...)
		pick(&c.Proxy.AccessLog, p.AccessLog)
		pick(&c.Proxy.UDPReceiveBuffer, p.UDPReceiveBuffer)
		pick(&c.Proxy.UDPNewSessionRate, p.UDPNewSessionRate)
		pick(&c.Proxy.UDPNewSessionRatePerPrefix, p.UDPNewSessionRatePerPrefix)
		pick(&c.Proxy.ProxyProtocolFrom, p.ProxyProtocolFrom)
	}
	if cl := r.Client; cl != nil {
		pick(&c.Client.Enabled, cl.Enabled)
		pick(&c.Client.Servers, cl.Servers)
		pick(&c.Client.NetworkInterface, cl.NetworkInterface)
		pick(&c.Client.KeepTunnelsOnStop, cl.KeepTunnelsOnStop)
		for _, rs := range cl.Services {
			diags = append(diags, m.mergeService(rs)...)
		}
		for _, rc := range cl.Containers {
			m.mergeContainer(rc)
		}
	}
	if t := r.Telemetry; t != nil {
		diags = append(diags, pickDur(&c.Telemetry.PrometheusRetentionTime, t.PrometheusRetentionTime)...)
		pick(&c.Telemetry.DisableHostname, t.DisableHostname)
		pick(&c.Telemetry.StatsdAddress, t.StatsdAddress)
	}
	if t := r.TLS; t != nil {
		pick(&c.TLS.CAFile, t.CAFile)
		pick(&c.TLS.CertFile, t.CertFile)
		pick(&c.TLS.KeyFile, t.KeyFile)
		pick(&c.TLS.VerifyIncoming, t.VerifyIncoming)
		pick(&c.TLS.VerifyOutgoing, t.VerifyOutgoing)
		pick(&c.TLS.VerifyServerHostname, t.VerifyServerHostname)
	}
	if l := r.Limits; l != nil {
		pick(&c.Limits.HTTPMaxConnsPerClient, l.HTTPMaxConnsPerClient)
		pick(&c.Limits.HTTPMaxConns, l.HTTPMaxConns)
		diags = append(diags, pickDur(&c.Limits.HTTPReadTimeout, l.HTTPReadTimeout)...)
		diags = append(diags, pickDur(&c.Limits.HTTPWriteTimeout, l.HTTPWriteTimeout)...)
		diags = append(diags, pickDur(&c.Limits.HTTPIdleTimeout, l.HTTPIdleTimeout)...)
		pick(&c.Limits.GRPCMaxConcurrentStreams, l.GRPCMaxConcurrentStreams)
		pick(&c.Limits.GRPCMaxStreamsPerClient, l.GRPCMaxStreamsPerClient)
	}
	return diags
}

// mergeService merges a host service by name: a later file's block for the same name
// overrides the fields it sets. Two blocks for one name in the same file are rejected by
// Validate through the duplicate check on ranges.
func (m *merger) mergeService(rs rawHostService) hcl.Diagnostics {
	s := named(&m.cfg.Client.Services, rs.Name, func(s HostService) string { return s.Name },
		HostService{Name: rs.Name})
	pick(&s.Stack, rs.Stack)
	pick(&s.Port, rs.Port)
	pick(&s.Protocol, rs.Protocol)
	pick(&s.Address, rs.Address)
	return pickDur(&s.CheckInterval, rs.CheckInterval)
}

// mergeContainer merges a container block by container name, like mergeService.
func (m *merger) mergeContainer(rc rawContainer) {
	s := named(&m.cfg.Client.Containers, rc.Name, func(c ContainerReplica) string { return c.Name },
		ContainerReplica{Name: rc.Name})
	pick(&s.Service, rc.Service)
	pick(&s.Port, rc.Port)
	pick(&s.Protocol, rc.Protocol)
	pick(&s.Stack, rc.Stack)
}

// named returns the element of *list called name (the last, should there be several),
// appending fresh when there is none: the by-name merge of repeated blocks.
func named[T any](list *[]T, name string, nameOf func(T) string, fresh T) *T {
	for i := len(*list) - 1; i >= 0; i-- {
		if nameOf((*list)[i]) == name {
			return &(*list)[i]
		}
	}
	*list = append(*list, fresh)
	return &(*list)[len(*list)-1]
}

func pick[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

func pickDur(dst *time.Duration, a *hcl.Attribute) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	d, diags := DurationAttr(a)
	if !diags.HasErrors() {
		*dst = d
	}
	return diags
}
