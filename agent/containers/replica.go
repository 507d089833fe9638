// Package containers discovers Docker containers that are replicas of nullnet services: it
// watches the local Docker Engine (list, then its event stream) and keeps the current set of
// container replicas, and registers them in the local Consul agent like host services.
package containers

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Labels a container carries to become a replica.
const (
	LabelService  = "nullnet.service"
	LabelPort     = "nullnet.port"
	LabelProtocol = "nullnet.protocol"
	LabelStack    = "nullnet.stack"
)

// State of a container replica, from the engine's view.
type State string

const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateExited  State = "exited"
)

// Spec says which service a container serves: from its labels or from the agent config.
type Spec struct {
	Service  string
	Port     int
	Protocol string // tcp (default), udp, http, tls
	Stack    string
}

// Replica is one container serving a service.
type Replica struct {
	ID    string
	Name  string // without Docker's leading "/"
	Spec  Spec
	State State
	PID   int
	// Addresses by Docker network name, sorted by network name in Address.
	Addresses map[string]netip.Addr
}

// Address is the container's address that proxies dial: the first network (by name) that
// gave it an IPv4 address, else the first with any address.
func (r Replica) Address() netip.Addr {
	names := make([]string, 0, len(r.Addresses))
	for n := range r.Addresses {
		names = append(names, n)
	}
	sort.Strings(names)
	var any netip.Addr
	for _, n := range names {
		a := r.Addresses[n]
		if a.Is4() {
			return a
		}
		if !any.IsValid() && a.IsValid() {
			any = a
		}
	}
	return any
}

var protocols = map[string]bool{"tcp": true, "udp": true, "http": true, "tls": true}

// ParseLabels reads a container's nullnet labels. ok is false when the container carries no
// nullnet.service label (not a replica); err says why labels that are present are unusable.
func ParseLabels(labels map[string]string) (spec Spec, ok bool, err error) {
	svc, has := labels[LabelService]
	if !has {
		return Spec{}, false, nil
	}
	spec = Spec{Service: strings.TrimSpace(svc), Protocol: "tcp", Stack: labels[LabelStack]}
	if err := validService(spec.Service); err != nil {
		return Spec{}, true, err
	}
	portText, has := labels[LabelPort]
	if !has {
		return Spec{}, true, fmt.Errorf("label %s is set but %s is missing", LabelService, LabelPort)
	}
	p, perr := strconv.Atoi(strings.TrimSpace(portText))
	if perr != nil || p < 1 || p > 65535 {
		return Spec{}, true, fmt.Errorf("label %s=%q: want a port number 1-65535", LabelPort, clip(portText))
	}
	spec.Port = p
	if v, has := labels[LabelProtocol]; has {
		v = strings.ToLower(strings.TrimSpace(v))
		if !protocols[v] {
			return Spec{}, true, fmt.Errorf("label %s=%q: want tcp, udp, http or tls", LabelProtocol, clip(v))
		}
		spec.Protocol = v
	}
	return spec, true, nil
}

func validService(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("label %s: want a service name of 1-253 characters", LabelService)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("label %s=%q: only letters, digits, '-', '.', '_' are allowed", LabelService, clip(s))
		}
	}
	return nil
}

// clip bounds label text echoed into logs (labels are set by whoever runs containers).
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
