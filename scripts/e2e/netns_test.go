package e2e

import (
	"fmt"
	"strings"
	"time"
)

// The underlay: one bridge in a "switch" namespace of the run, one veth per host namespace,
// and one veth to the root namespace with an address too, so that the test process can reach
// the agents' HTTP APIs and Consul directly. The bridge is not in the root namespace on
// purpose: Docker (present on these machines) sets the root FORWARD policy to DROP and loads
// br_netfilter, which would run bridged frames through that chain. In the switch namespace no
// rule exists, and the bridge's nf_call_iptables (and the namespace's bridge-nf sysctls, where
// br_netfilter is loaded) are off besides; the host's own policy is never touched.
const (
	prefixLen = 24
	// keepMarker in a temp dir says NULLNET_E2E_KEEP asked to keep it.
	keepMarker = "KEPT"
)

// host is one network namespace standing for a machine.
type host struct {
	name  string // short name: ctl, edge, node1 …
	ns    string // namespace name: <prefix>-ctl …
	ip    string // underlay address
	octet int    // last octet of ip
}

func newHost(name string, octet int) *host { return &host{name: name, octet: octet} }

// Hosts of the cluster; their namespaces and addresses are the run's (setRunNames).
var (
	hostCtl  = newHost("ctl", 10)
	hostEdge = newHost("edge", 11)
	hostN1   = newHost("node1", 21)
	hostN2   = newHost("node2", 22)
	hostOut  = newHost("out", 50)
	allHosts = []*host{hostCtl, hostEdge, hostN1, hostN2, hostOut}
)

// The run's underlay names and the root namespace's address, set by setRunNames.
var (
	switchNS string // namespace holding the underlay bridge
	rootLink string // the root namespace's end of its veth to the bridge (IFNAMSIZ: 12 bytes)
	rootAddr string // its address: the suite's own client address
)

// setRunNames derives every name and address from the run's prefix and subnet.
func setRunNames() {
	p := thisRun.prefix
	base := fmt.Sprintf("%s.%d", underlayNet, thisRun.subnet)
	switchNS, rootLink, rootAddr = p+"-sw", p+"-rt", base+".1"
	for _, h := range allHosts {
		h.ns = p + "-" + h.name
		h.ip = fmt.Sprintf("%s.%d", base, h.octet)
	}
}

// buildUnderlay creates the switch namespace with its bridge, the root namespace's veth and
// the host namespaces; each step registers its own removal.
func buildUnderlay() error {
	if _, err := run(nil, "ip", "netns", "add", switchNS); err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	registry.add("namespace "+switchNS, func() { deleteNamespace(switchNS) })
	// Without br_netfilter loaded these sysctls do not exist, and nothing filters bridged
	// frames anyway: an error is not a failure.
	for _, k := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-arptables"} {
		_, _ = run(nil, "ip", "netns", "exec", switchNS, "sysctl", "-qw", k+"=0")
	}
	registry.add("link "+rootLink, func() { _, _ = run(nil, "ip", "link", "del", rootLink) })
	steps := [][]string{
		{"-n", switchNS, "link", "add", "br0", "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"},
		{"-n", switchNS, "link", "set", "br0", "up"},
		{"-n", switchNS, "link", "set", "lo", "up"},
		{"link", "add", rootLink, "type", "veth", "peer", "name", "v-root", "netns", switchNS},
		{"-n", switchNS, "link", "set", "v-root", "master", "br0", "up"},
		{"addr", "add", fmt.Sprintf("%s/%d", rootAddr, prefixLen), "dev", rootLink},
		{"link", "set", rootLink, "up"},
	}
	for _, s := range steps {
		if _, err := run(nil, "ip", s...); err != nil {
			return fmt.Errorf("underlay: %w", err)
		}
	}
	for _, h := range allHosts {
		if err := addHost(h); err != nil {
			return err
		}
	}
	return nil
}

func addHost(h *host) error {
	if _, err := run(nil, "ip", "netns", "add", h.ns); err != nil {
		return fmt.Errorf("host %s: %w", h.name, err)
	}
	ns := h.ns
	// Deleting the host namespace deletes its eth0 and so the pair; the switch end goes with it.
	registry.add("namespace "+ns, func() { deleteNamespace(ns) })
	port := "v-" + h.name // switch end, on the bridge
	cmds := [][]string{
		{"-n", switchNS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
		{"-n", switchNS, "link", "set", port, "master", "br0", "up"},
		{"-n", h.ns, "addr", "add", fmt.Sprintf("%s/%d", h.ip, prefixLen), "dev", "eth0"},
		{"-n", h.ns, "link", "set", "eth0", "up"},
		{"-n", h.ns, "link", "set", "lo", "up"},
	}
	for _, c := range cmds {
		if _, err := run(nil, "ip", c...); err != nil {
			return fmt.Errorf("host %s: %w", h.name, err)
		}
	}
	return nil
}

// deleteNamespace kills whatever still runs in the namespace (only our own daemons can be
// there), then deletes it; its devices, including nullnet's tunnels, go with it.
func deleteNamespace(ns string) {
	if out, err := run(nil, "ip", "netns", "pids", ns); err == nil {
		for _, pid := range strings.Fields(out) {
			_, _ = run(nil, "kill", "-9", pid)
		}
	}
	for i := 0; i < 10; i++ {
		if _, err := run(nil, "ip", "netns", "del", ns); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// links lists the link names inside a host.
func (h *host) links() ([]string, error) {
	out, err := run(nil, "ip", "-n", h.ns, "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names, nil
}

// tunnelDevices lists nullnet's tunnel devices on a host with the given side suffix ("s" for
// the service side, "c" for the proxy side): br_N_x and vx_N_x.
func (h *host) tunnelDevices(side string) ([]string, error) {
	names, err := h.links()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if (strings.HasPrefix(n, "br_") || strings.HasPrefix(n, "vx_")) && strings.HasSuffix(n, "_"+side) {
			out = append(out, n)
		}
	}
	return out, nil
}
