package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

// Stack-file protocols. http services are routed by Host header; tcp and udp get a listener on
// every proxy; tls services get a TCP listener too, which several tls services may share: the
// proxy routes each connection by the server name (SNI) of its ClientHello, matched against the
// service name exactly as an http service's name is matched against the Host header, and relays
// the bytes without terminating TLS.
const (
	ProtocolHTTP = "http"
	ProtocolTCP  = "tcp"
	ProtocolUDP  = "udp"
	ProtocolTLS  = "tls"
)

// PortSpace is the port number space a protocol's listen_port lives in: tcp and tls listen on
// TCP ports, udp on UDP ports.
func PortSpace(protocol string) string {
	if protocol == ProtocolUDP {
		return ProtocolUDP
	}
	return ProtocolTCP
}

// SharesPort reports whether two services of these protocols may listen on the same port of one
// port space: only tls services, which the proxy tells apart by SNI.
func SharesPort(a, b string) bool { return a == ProtocolTLS && b == ProtocolTLS }

// Stack is one `stack "name" { ... }` block.
type Stack struct {
	Name     string         `json:"name"`
	Services []StackService `json:"services"`
	// DeclRange is the block header, for "already declared at" diagnostics.
	DeclRange hcl.Range `json:"-"`
}

// StackService is one `service "name" { ... }` block inside a stack.
type StackService struct {
	Stack    string `json:"stack"`
	Name     string `json:"service"`
	Protocol string `json:"protocol"`
	// ListenPort is the proxies' listening port (tcp/udp/tls only; 0 for http).
	ListenPort int `json:"listen_port,omitempty"`
	// EntryPoint is true when `timeout` is set: the proxy may reach the service. A service
	// without a timeout is a backend only.
	EntryPoint bool `json:"entry_point"`
	// Timeout is the idle timeout in whole seconds' precision (0 with EntryPoint = never).
	Timeout time.Duration `json:"-"`
	// Policy is the service's edge settings (see ServicePolicy); zero when none are set.
	Policy    ServicePolicy `json:"policy,omitempty"`
	DeclRange hcl.Range     `json:"-"`

	routeRanges []routeRange // where Policy.Routes were declared (stack_routes.go)
}

// StackRules are the checks that depend on the deployment rather than on the files alone.
type StackRules struct {
	// ReservedPorts are TCP ports a tcp service may not claim, with the reason shown in the
	// error ("the proxies' HTTP listener", "the agent's HTTP API", ...).
	ReservedPorts map[int]string
}

// StackRulesFor derives the rules from an agent configuration: a tcp listen_port may not take
// the proxies' HTTP port (proxy.http_addr, default 80), their HTTPS port (proxy.https_addr,
// default 443, unless HTTPS is off), or the agent's own HTTP and gRPC ports. The server and
// `nullnet validate -stacks` both use it, so they agree.
func StackRulesFor(cfg *Config) StackRules {
	reserved := map[int]string{}
	if cfg.Proxy.HTTPSAddr != "" {
		if _, p, err := net.SplitHostPort(cfg.Proxy.HTTPSAddr); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				reserved[n] = "the proxies' HTTPS listener (proxy.https_addr)"
			}
		}
	}
	httpPort := 80
	if _, p, err := net.SplitHostPort(cfg.Proxy.HTTPAddr); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			httpPort = n
		}
	}
	reserved[httpPort] = "the proxies' HTTP listener (proxy.http_addr)"
	if cfg.Ports.HTTP > 0 {
		reserved[cfg.Ports.HTTP] = "the agent's HTTP API (ports.http)"
	}
	if cfg.Ports.GRPC > 0 {
		reserved[cfg.Ports.GRPC] = "the agent's gRPC port (ports.grpc)"
	}
	return StackRules{ReservedPorts: reserved}
}

// StackFile is one stack file's name and content. Loading works on contents already read so
// that the caller can fingerprint exactly what was validated.
type StackFile struct {
	Path  string
	Bytes []byte
}

// StackSet is the result of loading a stacks directory: the stacks (valid only when Diags has
// no errors), the parsed files (for printing diagnostics with their source lines) and every
// diagnostic.
type StackSet struct {
	Stacks []Stack
	Files  map[string]*hcl.File
	Diags  hcl.Diagnostics
	// Paths lists the files read, in lexical order.
	Paths []string
	// Fingerprint identifies the exact contents read (names and bytes).
	Fingerprint string
}

// Services returns every service of every stack, sorted by name.
func (s *StackSet) Services() []StackService {
	var out []StackService
	for _, st := range s.Stacks {
		out = append(out, st.Services...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ReadStackFiles reads every *.hcl file directly in dir (no recursion), in lexical order. Hidden
// files are skipped: editors write their swap and backup files as dot files. Each must be a
// regular file of at most MaxFileSize bytes (ReadRegularFile): anything else named *.hcl is an
// error, returned at once, never a read that waits.
func ReadStackFiles(dir string) ([]StackFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading stacks directory: %w", err)
	}
	var files []StackFile
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || filepath.Ext(name) != ".hcl" {
			continue
		}
		p := filepath.Join(dir, name)
		b, err := ReadRegularFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed between ReadDir and the open; the watcher will see it
			}
			return nil, fmt.Errorf("reading stack file: %w", err)
		}
		files = append(files, StackFile{Path: p, Bytes: b})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

// StackFingerprint hashes file names and contents, so that a reload can tell whether anything
// changed since the last one.
func StackFingerprint(files []StackFile) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.Path, len(f.Bytes))
		h.Write(f.Bytes)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// IsStackFile reports whether src (an HCL file) holds top-level `stack` blocks, i.e. is a stack
// file rather than an agent configuration file, so that `nullnet validate FILE` can check it as
// one. A file that does not parse is not judged a stack file.
func IsStackFile(path string, src []byte) bool {
	if filepath.Ext(path) != ".hcl" {
		return false
	}
	file, diags := hclparse.NewParser().ParseHCL(src, path)
	if file == nil || diags.HasErrors() {
		return false
	}
	content, _, _ := file.Body.PartialContent(stackFileSchema)
	return content != nil && len(content.Blocks) > 0
}

// LoadStacks reads and validates every stack file in dir.
func LoadStacks(dir string, rules StackRules) *StackSet {
	files, err := ReadStackFiles(dir)
	if err != nil {
		return &StackSet{Files: map[string]*hcl.File{}, Diags: hcl.Diagnostics{{
			Severity: hcl.DiagError, Summary: "Cannot read stacks directory", Detail: err.Error()}}}
	}
	return ParseStacks(files, rules)
}

// ParseStacks parses and validates stack files as one set: every rule that spans files (unique
// stack and service names, unique (protocol, listen_port)) is checked across all of them, and
// every problem is reported, not only the first.
func ParseStacks(files []StackFile, rules StackRules) *StackSet {
	set := &StackSet{Fingerprint: StackFingerprint(files)}
	parser := hclparse.NewParser()
	for _, f := range files {
		set.Paths = append(set.Paths, f.Path)
		file, diags := parser.ParseHCL(f.Bytes, f.Path)
		set.Diags = append(set.Diags, diags...)
		if file == nil || diags.HasErrors() {
			continue
		}
		stacks, diags := decodeStackFile(file.Body)
		set.Diags = append(set.Diags, diags...)
		set.Stacks = append(set.Stacks, stacks...)
	}
	set.Files = parser.Files()
	set.Diags = append(set.Diags, validateStackSet(set.Stacks, rules)...)
	set.Diags = append(set.Diags, validateRoutes(set.Stacks)...)
	sort.SliceStable(set.Stacks, func(i, j int) bool { return set.Stacks[i].Name < set.Stacks[j].Name })
	return set
}

var (
	stackFileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "stack", LabelNames: []string{"name"}}}}
	stackSchema     = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "service", LabelNames: []string{"name"}}}}
	serviceSchema   = &hcl.BodySchema{Attributes: append([]hcl.AttributeSchema{
		{Name: "protocol"}, {Name: "listen_port"}, {Name: "timeout"}, {Name: "acme"},
		{Name: "send_proxy_protocol"},
		{Name: "https_redirect"}, {Name: "hsts"},
		{Name: "close_on_unhealthy"}}, clientPolicyAttrs...),
		Blocks: []hcl.BlockHeaderSchema{{Type: "route", LabelNames: []string{"path_prefix"}}}}
)

// decodeStackFile decodes one file's stack blocks. Unknown blocks and attributes are errors
// (hcl reports them with their position).
func decodeStackFile(body hcl.Body) ([]Stack, hcl.Diagnostics) {
	content, diags := body.Content(stackFileSchema)
	var stacks []Stack
	for _, b := range content.Blocks {
		st := Stack{Name: b.Labels[0], DeclRange: b.DefRange}
		diags = append(diags, checkName("stack", st.Name, b.LabelRanges[0])...)
		sc, d := b.Body.Content(stackSchema)
		diags = append(diags, d...)
		for _, sb := range sc.Blocks {
			svc, d := decodeService(st.Name, sb)
			diags = append(diags, d...)
			st.Services = append(st.Services, svc)
		}
		stacks = append(stacks, st)
	}
	return stacks, diags
}

func decodeService(stack string, b *hcl.Block) (StackService, hcl.Diagnostics) {
	svc := StackService{Stack: stack, Name: b.Labels[0], Protocol: ProtocolHTTP, DeclRange: b.DefRange}
	diags := checkName("service", svc.Name, b.LabelRanges[0])
	content, d := b.Body.Content(serviceSchema)
	diags = append(diags, d...)

	if a := content.Attributes["protocol"]; a != nil {
		p, d := StringAttr(a)
		diags = append(diags, d...)
		switch p {
		case ProtocolHTTP, ProtocolTCP, ProtocolUDP, ProtocolTLS:
			svc.Protocol = p
		default:
			if !d.HasErrors() {
				diags = append(diags, errAt(a.Expr.Range().Ptr(), "Invalid protocol",
					"protocol must be one of \"http\", \"tcp\", \"udp\" or \"tls\", not %q.", p))
			}
		}
	}
	port := content.Attributes["listen_port"]
	if port != nil {
		n, d := portAttr(port)
		diags = append(diags, d...)
		svc.ListenPort = n
	}
	timeout := content.Attributes["timeout"]
	if timeout != nil {
		t, d := DurationAttr(timeout)
		diags = append(diags, d...)
		if !d.HasErrors() && t%time.Second != 0 {
			// Proxies receive whole seconds; silently rounding would surprise.
			diags = append(diags, errAt(timeout.Expr.Range().Ptr(), "Invalid timeout",
				"timeout must be a whole number of seconds; %s is not.", t))
		}
		svc.Timeout, svc.EntryPoint = t, true
	}
	acme := content.Attributes["acme"]
	if acme != nil {
		v, d := BoolAttr(acme)
		diags = append(diags, d...)
		svc.Policy.ACME = v
	}
	diags = append(diags, decodeClientPolicy(content, &svc)...)

	diags = append(diags, decodeSendProxyProtocol(&svc, content.Attributes["send_proxy_protocol"])...)
	diags = append(diags, decodeCloseOnUnhealthy(content, &svc)...)
	diags = append(diags, decodeRoutes(&svc, content.Blocks)...)

	switch svc.Protocol {
	case ProtocolHTTP:
		if port != nil {
			diags = append(diags, errAt(port.NameRange.Ptr(), "Unexpected listen_port",
				"http service %q is routed by Host header on the proxies' HTTP listener; listen_port is only for tcp, udp and tls services.", svc.Name))
		}
		if svc.Policy.ACME {
			diags = append(diags, checkACMEService(svc, acme)...)
		}
	case ProtocolTCP, ProtocolUDP, ProtocolTLS:
		if acme != nil {
			diags = append(diags, errAt(acme.NameRange.Ptr(), "Unexpected acme",
				"acme is for http services (the proxies terminate TLS for them); %s service %q carries its own bytes (a tls service's backend holds its own certificate).", svc.Protocol, svc.Name))
		}
		if port == nil {
			diags = append(diags, errAt(b.DefRange.Ptr(), "Missing listen_port",
				"%s service %q needs listen_port: the port the proxies listen on.", svc.Protocol, svc.Name))
		}
		if timeout == nil {
			diags = append(diags, errAt(b.DefRange.Ptr(), "Missing timeout",
				"%s service %q needs timeout (seconds or a duration such as \"90s\"; 0 = never idles out): the proxies only open ports for services they may reach.", svc.Protocol, svc.Name))
		}
	}
	diags = append(diags, decodeHTTPSKeys(&svc, content)...)
	return svc, diags
}

// checkACMEService checks that an http service with acme = true can get a certificate: the CA
// must reach it through the proxies (an entry point, with timeout) under a public DNS name.
func checkACMEService(svc StackService, a *hcl.Attribute) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if !svc.EntryPoint {
		diags = append(diags, errAt(a.NameRange.Ptr(), "acme on a backend-only service",
			"http service %q has no timeout, so the proxies do not route it and the CA's challenge cannot reach it; add timeout or drop acme.", svc.Name))
	}
	if !strings.Contains(svc.Name, ".") {
		diags = append(diags, errAt(a.NameRange.Ptr(), "acme needs a domain name",
			"%q is not a fully qualified domain name; an ACME CA only issues certificates for names such as \"app.example.com\" (the service name is the Host it answers).", svc.Name))
	}
	return diags
}

// portAttr evaluates listen_port: a whole number in 1..65535.
func portAttr(a *hcl.Attribute) (int, hcl.Diagnostics) { return wholeAttr(a, 65535, "") }

// wholeAttr evaluates a whole number in 1..max; note follows the range in the error.
func wholeAttr(a *hcl.Attribute, max int64, note string) (int, hcl.Diagnostics) {
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return 0, diags
	}
	bad := func(got string) hcl.Diagnostics {
		return hcl.Diagnostics{errAt(a.Expr.Range().Ptr(), "Invalid "+a.Name,
			"%s must be a whole number in 1..%d%s%s.", a.Name, max, note, got)}
	}
	if v.IsNull() || v.Type() != cty.Number {
		return 0, bad("")
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() || bf.Cmp(big.NewFloat(1)) < 0 || bf.Cmp(new(big.Float).SetInt64(max)) > 0 {
		return 0, bad(", not " + bf.Text('g', -1))
	}
	n, _ := bf.Int64()
	return int(n), nil
}

// nameRE is a DNS name: dot-separated labels of lowercase letters, digits and hyphens, not
// starting or ending with a hyphen. Service names are Consul service names and HTTP Host
// values, so they must be valid as both; stack names follow the same rule for consistency.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func checkName(kind, name string, rng hcl.Range) hcl.Diagnostics {
	if len(name) <= 253 && nameRE.MatchString(name) {
		return nil
	}
	return hcl.Diagnostics{errAt(rng.Ptr(), fmt.Sprintf("Invalid %s name", kind),
		"%q is not a valid name: use lowercase letters, digits, hyphens and dots (a DNS name, at most 253 characters, labels at most 63, not starting or ending with a hyphen).", name)}
}

// validateStackSet checks the rules that span every file: unique stack names, unique service
// names (Consul service names and Host routing are global), one service per listen_port of each
// port space except that tls services share theirs (a tcp and a tls service never do), and
// reserved ports.
func validateStackSet(stacks []Stack, rules StackRules) hcl.Diagnostics {
	var diags hcl.Diagnostics
	stackSeen := map[string]hcl.Range{}
	svcSeen := map[string]StackService{}
	type portKey struct {
		space string
		port  int
	}
	portSeen := map[portKey]StackService{} // the first service declared on each port
	for _, st := range stacks {
		if first, dup := stackSeen[st.Name]; dup {
			diags = append(diags, errAt(st.DeclRange.Ptr(), "Duplicate stack",
				"stack %q is already declared at %s.", st.Name, pos(first)))
		} else {
			stackSeen[st.Name] = st.DeclRange
		}
		for _, svc := range st.Services {
			if first, dup := svcSeen[svc.Name]; dup {
				diags = append(diags, errAt(svc.DeclRange.Ptr(), "Duplicate service",
					"service %q is already declared in stack %q at %s; service names are unique across all stacks.",
					svc.Name, first.Stack, pos(first.DeclRange)))
				continue
			}
			svcSeen[svc.Name] = svc
			if svc.ListenPort == 0 || svc.Protocol == ProtocolHTTP {
				continue
			}
			if why, ok := rules.ReservedPorts[svc.ListenPort]; ok && PortSpace(svc.Protocol) == ProtocolTCP {
				diags = append(diags, errAt(svc.DeclRange.Ptr(), "Reserved listen_port",
					"%s port %d of service %q (stack %q) is taken by %s.", svc.Protocol, svc.ListenPort, svc.Name, svc.Stack, why))
				continue
			}
			k := portKey{PortSpace(svc.Protocol), svc.ListenPort}
			first, dup := portSeen[k]
			switch {
			case !dup:
				portSeen[k] = svc
			case SharesPort(first.Protocol, svc.Protocol):
				// Routed by SNI: the names differ, since service names are unique.
			case first.Protocol != svc.Protocol:
				diags = append(diags, errAt(svc.DeclRange.Ptr(), "Conflicting listen_port",
					"%s port %d of service %q (stack %q) is already used by %s service %q (stack %q) at %s; a tcp and a tls service cannot share a port (tls services share theirs, routed by SNI).",
					svc.Protocol, svc.ListenPort, svc.Name, svc.Stack, first.Protocol, first.Name, first.Stack, pos(first.DeclRange)))
			default:
				diags = append(diags, errAt(svc.DeclRange.Ptr(), "Conflicting listen_port",
					"%s port %d of service %q (stack %q) is already used by service %q (stack %q) at %s.",
					svc.Protocol, svc.ListenPort, svc.Name, svc.Stack, first.Name, first.Stack, pos(first.DeclRange)))
			}
		}
	}
	return diags
}

// pos renders a range's start as file:line:col, the form every diagnostic uses.
func pos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}
