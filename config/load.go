package config

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// Source is one -config-file or -config-dir argument, in command-line order.
type Source struct {
	Path  string
	IsDir bool
}

// Result is what Load returns: the merged configuration, the parsed files (for printing
// diagnostics with their source lines) and every diagnostic found.
type Result struct {
	Config *Config
	Files  map[string]*hcl.File
	Diags  hcl.Diagnostics
	// Paths lists the files read, in the order they were merged.
	Paths []string
}

// WriteDiagnostics prints each diagnostic as "file:line:col: severity: summary", then its detail
// and the offending source line with a marker under the range, as compilers do.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) error {
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		var b strings.Builder
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		fmt.Fprintf(&b, "%s: %s", sev, d.Summary)
		if d.Detail != "" {
			fmt.Fprintf(&b, "; %s", d.Detail)
		}
		b.WriteString("\n")
		if d.Subject != nil {
			if f := files[d.Subject.Filename]; f != nil {
				b.WriteString(sourceLine(f.Bytes, *d.Subject))
			}
		}
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// sourceLine returns the range's first line, indented, with carets under the range.
func sourceLine(src []byte, rng hcl.Range) string {
	lines := strings.Split(string(src), "\n")
	if rng.Start.Line < 1 || rng.Start.Line > len(lines) {
		return ""
	}
	line := strings.TrimRight(lines[rng.Start.Line-1], "\r")
	width := 1
	if rng.End.Line == rng.Start.Line && rng.End.Column > rng.Start.Column {
		width = rng.End.Column - rng.Start.Column
	}
	// Mirror the line's own tabs so the carets line up under tab-indented source.
	pad := ""
	if runes := []rune(line); rng.Start.Column-1 <= len(runes) {
		pad = strings.Map(func(r rune) rune {
			if r == '\t' {
				return '\t'
			}
			return ' '
		}, string(runes[:max(rng.Start.Column-1, 0)]))
	}
	return fmt.Sprintf("  %4d | %s\n       | %s%s\n", rng.Start.Line, line, pad, strings.Repeat("^", width))
}

// ExpandSources turns sources into the ordered list of files to read: a directory contributes
// every *.hcl and *.json file in it, in lexical order (no recursion, as Consul does).
func ExpandSources(sources []Source) ([]string, hcl.Diagnostics) {
	var out []string
	var diags hcl.Diagnostics
	for _, s := range sources {
		if !s.IsDir {
			out = append(out, s.Path)
			continue
		}
		entries, err := os.ReadDir(s.Path)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
				Summary: "Cannot read config directory", Detail: err.Error()})
			continue
		}
		var names []string
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			if ext := filepath.Ext(e.Name()); ext == ".hcl" || ext == ".json" {
				names = append(names, filepath.Join(s.Path, e.Name()))
			}
		}
		sort.Strings(names)
		out = append(out, names...)
	}
	return out, diags
}

// Load reads, merges, defaults and validates the agent configuration. Later files override
// earlier ones field by field; blocks merge; `service` blocks merge by name.
func Load(sources []Source, dev bool) *Result {
	res := &Result{}
	parser := hclparse.NewParser()
	paths, diags := ExpandSources(sources)
	res.Diags = append(res.Diags, diags...)
	res.Paths = paths

	m := newMerger()
	if dev {
		m.applyDev()
	}
	for _, p := range paths {
		var f *hcl.File
		var d hcl.Diagnostics
		src, err := ReadRegularFile(p)
		switch {
		case err != nil:
			d = hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read config file", Detail: err.Error()}}
		case strings.HasSuffix(p, ".json"):
			f, d = parser.ParseJSON(src, p)
		default:
			f, d = parser.ParseHCL(src, p)
		}
		res.Diags = append(res.Diags, d...)
		if f == nil || d.HasErrors() {
			continue
		}
		var raw rawConfig
		// Merge what decoded even when some fields did not, so that one run reports every
		// problem; the result is unusable anyway once any diagnostic is an error.
		res.Diags = append(res.Diags, gohcl.DecodeBody(f.Body, nil, &raw)...)
		collectRanges(f.Body, "", "", m.ranges)
		res.Diags = append(res.Diags, duplicateServices(raw.Client)...)
		res.Diags = append(res.Diags, m.merge(&raw)...)
	}
	res.Files = parser.Files()
	cfg := m.cfg
	if dev {
		cfg.DevMode = true
	}
	applyDefaults(&cfg)
	res.Diags = append(res.Diags, Validate(&cfg, m.ranges)...)
	res.Config = &cfg
	return res
}

// Default returns a configuration with every default applied and no role enabled.
func Default() *Config {
	var c Config
	presetDefaults(&c)
	applyDefaults(&c)
	return &c
}

// presetDefaults sets the defaults of fields whose zero value is a setting of its own
// (proxy.use_linger = 0 turns use sharing off, proxy.https_addr = "" turns HTTPS off,
// proxy.drain_timeout = 0 stops without a drain, a UDP rate of 0 is no limit,
// client.keep_tunnels_on_stop defaults to true). They are set before any file is merged, so an
// explicit 0 or "" in a file survives; applyDefaults, which fills zero values, cannot tell
// them apart.
func presetDefaults(c *Config) {
	c.Proxy.UseLinger = DefaultUseLinger
	c.Proxy.DrainTimeout = DefaultDrainTimeout
	c.Proxy.HTTPSAddr = DefaultProxyHTTPSAddr
	c.Client.KeepTunnelsOnStop = true
	c.Proxy.UDPReceiveBuffer = DefaultUDPReceiveBuffer
	c.Proxy.UDPNewSessionRate = DefaultUDPNewSessionRate
	c.Proxy.UDPNewSessionRatePerPrefix = DefaultUDPNewSessionRatePerPrefix
}

// applyDefaults is the single place defaults are set (documented in website/docs/agent-config.md).
func applyDefaults(c *Config) {
	if c.NodeName == "" {
		if h, err := os.Hostname(); err == nil {
			c.NodeName = h
		}
	}
	setStr(&c.Datacenter, DefaultDatacenter)
	setStr(&c.LogLevel, DefaultLogLevel)
	setStr(&c.BindAddr, DefaultBindAddr)
	setStr(&c.ClientAddr, DefaultClientAddr)
	setInt(&c.Limits.HTTPMaxConnsPerClient, DefaultHTTPMaxConnsPerClient)
	setInt(&c.Limits.HTTPMaxConns, DefaultHTTPMaxConns)
	setDur(&c.Limits.HTTPReadTimeout, DefaultHTTPReadTimeout)
	setDur(&c.Limits.HTTPWriteTimeout, DefaultHTTPWriteTimeout)
	setDur(&c.Limits.HTTPIdleTimeout, DefaultHTTPIdleTimeout)
	setInt(&c.Limits.GRPCMaxConcurrentStreams, DefaultGRPCMaxConcurrentStreams)
	setInt(&c.Limits.GRPCMaxStreamsPerClient, DefaultGRPCMaxStreamsPerClient)
	setInt(&c.Ports.HTTP, DefaultHTTPPort)
	setInt(&c.Ports.GRPC, DefaultGRPCPort)
	if c.Consul.Address == "" {
		c.Consul.Address = os.Getenv("CONSUL_HTTP_ADDR")
	}
	if c.Consul.Token == "" && c.Consul.TokenFile == "" {
		c.Consul.Token = os.Getenv("CONSUL_HTTP_TOKEN")
		c.Consul.TokenFile = os.Getenv("CONSUL_HTTP_TOKEN_FILE")
	}
	setStr(&c.Consul.CAFile, os.Getenv("CONSUL_CACERT"))
	setStr(&c.Consul.CertFile, os.Getenv("CONSUL_CLIENT_CERT"))
	setStr(&c.Consul.KeyFile, os.Getenv("CONSUL_CLIENT_KEY"))
	if !c.Consul.SSL && strings.EqualFold(os.Getenv("CONSUL_HTTP_SSL"), "true") {
		c.Consul.SSL = true
	}
	setStr(&c.Consul.Address, "127.0.0.1:8500")
	setStr(&c.Server.Network, NetworkVXLAN)
	setDur(&c.Server.SetupTimeout, DefaultSetupTimeout)
	setDur(&c.Server.NodeGracePeriod, DefaultNodeGrace)
	setDur(&c.Server.OrphanGrace, DefaultOrphanGrace)
	setDur(&c.Server.ReloadDebounce, DefaultReloadDebounce)
	setInt(&c.Server.EventBufferSize, DefaultEventBufferSize)
	if c.Server.NetIDMin == 0 {
		c.Server.NetIDMin = DefaultNetIDMin
	}
	if c.Server.NetIDMax == 0 {
		c.Server.NetIDMax = DefaultNetIDMax
	}
	setStr(&c.Proxy.HTTPAddr, DefaultProxyHTTPAddr)
	setStr(&c.Proxy.BindAddr, "0.0.0.0")
	setDur(&c.Proxy.DialTimeout, DefaultDialTimeout)
	setDur(&c.Proxy.UDPIdleTimeout, DefaultUDPIdleTimeout)
	setInt(&c.Proxy.UDPMaxSessions, DefaultUDPMaxSessions)
	setInt(&c.Proxy.UDPQueueLength, DefaultUDPQueueLength)
	for i := range c.Client.Containers {
		setStr(&c.Client.Containers[i].Protocol, "tcp")
	}
	setStr(&c.Proxy.AccessLog, DefaultAccessLog)
	for i := range c.Client.Services {
		s := &c.Client.Services[i]
		setStr(&s.Protocol, "tcp")
		setDur(&s.CheckInterval, DefaultCheckInterval)
	}
	setDur(&c.Telemetry.PrometheusRetentionTime, DefaultPromRetention)
}

func setStr(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

func setInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

func setDur[T ~int64](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

// errAt builds an error diagnostic at a range (nil when the value came from a default).
func errAt(rng *hcl.Range, summary, detail string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary,
		Detail: fmt.Sprintf(detail, args...), Subject: rng}
}

// warnAt builds a warning diagnostic at a range.
func warnAt(rng *hcl.Range, summary, detail string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary,
		Detail: fmt.Sprintf(detail, args...), Subject: rng}
}
