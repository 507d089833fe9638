package server

import (
	"net/netip"
	"regexp"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits on what agents may send. Every RPC argument is checked against them before the
// control plane acts on it, and a violation is InvalidArgument with a message saying which
// field and why.
const (
	maxNodeName     = 128
	maxServiceName  = 253
	maxIDLength     = 128
	maxEventKind    = 64
	maxEventMessage = 4096
	maxEventFields  = 32
	maxFieldKey     = 64
	maxFieldValue   = 1024
	maxAckError     = 4096
	maxActiveEnds   = 65536
	maxUnderlayMTU  = 1 << 18
)

var (
	nodeNameRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	eventKindRe = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	idRe        = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)
)

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func checkNodeName(field, v string) error {
	if v == "" {
		return invalid("%s is required", field)
	}
	if len(v) > maxNodeName || !nodeNameRe.MatchString(v) {
		return invalid("%s %.64q is not a node name (letters, digits, '.', '_', '-'; at most %d characters)", field, v, maxNodeName)
	}
	return nil
}

func checkID(field, v string) error {
	if v == "" {
		return invalid("%s is required", field)
	}
	if len(v) > maxIDLength || !idRe.MatchString(v) {
		return invalid("%s %.64q is not a valid id", field, v)
	}
	return nil
}

// validateProxyRequest checks a Proxy call.
func validateProxyRequest(r *pb.ProxyRequest) error {
	if r.GetService() == "" {
		return invalid("service is required")
	}
	if len(r.GetService()) > maxServiceName || !config.ValidServiceName(r.GetService()) {
		return invalid("service %.64q is not a valid service name", r.GetService())
	}
	if err := checkNodeName("proxy_node", r.GetProxyNode()); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(r.GetClientIp()); err != nil {
		return invalid("client_ip %.64q is not an IP address", r.GetClientIp())
	}
	if _, ok := pb.ServiceProtocol_name[int32(r.GetProtocol())]; !ok {
		return invalid("protocol %d is not http, tcp, udp or tls", r.GetProtocol())
	}
	if a := r.GetAdopt(); a != nil {
		// Net id 0 is a use without a tunnel (network = "direct").
		if id := a.GetNetId(); id != 0 {
			if err := checkNetID(id); err != nil {
				return invalid("adopt: %s", status.Convert(err).Message())
			}
		}
		if _, err := netip.ParseAddr(a.GetUpstreamIp()); err != nil {
			return invalid("adopt.upstream_ip %.64q is not an IP address", a.GetUpstreamIp())
		}
		if a.GetUpstreamPort() < 1 || a.GetUpstreamPort() > 65535 {
			return invalid("adopt.upstream_port %d is out of range 1-65535", a.GetUpstreamPort())
		}
	}
	return nil
}

// validateRelease checks a ReleaseProxy call.
func validateRelease(r *pb.ReleaseProxyRequest) error {
	if err := checkID("lease_id", r.GetLeaseId()); err != nil {
		return err
	}
	if r.GetProxyNode() != "" {
		return checkNodeName("proxy_node", r.GetProxyNode())
	}
	return nil
}

// validateWatch checks a WatchPortMappings subscription.
func validateWatch(r *pb.WatchPortMappingsRequest) error {
	if r.GetProxyNode() != "" {
		return checkNodeName("proxy_node", r.GetProxyNode())
	}
	return nil
}

// validateHello checks the first message of a control channel. Tunnels need the node's
// underlay address; without tunnels (network = "direct") it may be absent.
func validateHello(h *pb.Hello, needUnderlay bool) error {
	if h == nil {
		return invalid("the first message on a control channel must be a Hello with node_name")
	}
	if err := checkNodeName("hello.node_name", h.GetNodeName()); err != nil {
		return err
	}
	if h.GetUnderlayAddr() != "" || needUnderlay {
		if _, err := netip.ParseAddr(h.GetUnderlayAddr()); err != nil {
			return invalid("node %q: underlay_addr %.64q is not an IP address (set advertise_addr on that agent)", h.GetNodeName(), h.GetUnderlayAddr())
		}
	}
	for _, r := range h.GetRoles() {
		if r != "client" && r != "proxy" && r != "server" {
			return invalid("node %q: unknown role %.32q", h.GetNodeName(), r)
		}
	}
	// Loopback reports 65536; jumbo-frame and virtual links stay well below the cap.
	if m := h.GetUnderlayMtu(); m != 0 && (m < 576 || m > maxUnderlayMTU) {
		return invalid("node %q: underlay_mtu %d is out of range 576-%d", h.GetNodeName(), m, maxUnderlayMTU)
	}
	if v := h.GetInstanceId(); v != "" {
		if err := checkID("hello.instance_id", v); err != nil {
			return err
		}
	}
	if len(h.GetActiveEnds()) > maxActiveEnds {
		return invalid("node %q: %d active ends is more than %d", h.GetNodeName(), len(h.GetActiveEnds()), maxActiveEnds)
	}
	for _, e := range h.GetActiveEnds() {
		if err := checkNetID(e.GetNetId()); err != nil {
			return err
		}
		if e.GetSide() != pb.OverlaySide_OVERLAY_SIDE_SERVICE && e.GetSide() != pb.OverlaySide_OVERLAY_SIDE_PROXY {
			return invalid("active end %d: side %d is not service or proxy", e.GetNetId(), e.GetSide())
		}
	}
	return nil
}

func checkNetID(id uint32) error {
	if id < config.DefaultNetIDMin || id > config.MaxNetID {
		return invalid("net id %d is out of range %d-%d", id, config.DefaultNetIDMin, config.MaxNetID)
	}
	return nil
}

// validateAck checks a command acknowledgement.
func validateAck(a *pb.CommandAck) error {
	if err := checkID("ack.command_id", a.GetCommandId()); err != nil {
		return err
	}
	if len(a.GetError()) > maxAckError {
		return invalid("ack.error is longer than %d bytes", maxAckError)
	}
	return nil
}

// validateEvent checks a reported event.
func validateEvent(e *pb.AgentEvent) error {
	if e.GetKind() == "" {
		return invalid("event kind is required")
	}
	if len(e.GetKind()) > maxEventKind || !eventKindRe.MatchString(e.GetKind()) {
		return invalid("event kind %.64q is not snake_case of at most %d characters", e.GetKind(), maxEventKind)
	}
	if _, ok := pb.Severity_name[int32(e.GetSeverity())]; !ok {
		return invalid("event severity %d is unknown", e.GetSeverity())
	}
	if e.GetNode() != "" {
		if err := checkNodeName("event node", e.GetNode()); err != nil {
			return err
		}
	}
	if len(e.GetMessage()) > maxEventMessage {
		return invalid("event message is longer than %d bytes", maxEventMessage)
	}
	if len(e.GetFields()) > maxEventFields {
		return invalid("event has %d fields; at most %d", len(e.GetFields()), maxEventFields)
	}
	for k, v := range e.GetFields() {
		if k == "" || len(k) > maxFieldKey || len(v) > maxFieldValue {
			return invalid("event field %.64q: keys are 1-%d bytes, values at most %d", k, maxFieldKey, maxFieldValue)
		}
	}
	return nil
}
