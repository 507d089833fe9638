package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The underlay: one bridge in the root namespace, one veth per host namespace. The root end has
// an address too so that the test process can reach the agents' HTTP APIs and Consul directly.
const (
	bridgeName = "nne-br0"
	bridgeAddr = "10.99.0.1"
	prefixLen  = 24
	namePrefix = "nne-"
	// tempDirPrefix names the suite's directory under os.TempDir.
	tempDirPrefix = "nne-e2e-"
	// keepMarker in a temp dir says NULLNET_E2E_KEEP asked to keep it.
	keepMarker = "KEPT"
)

// host is one network namespace standing for a machine.
type host struct {
	name string // short name: ctl, edge, node1 …
	ns   string // namespace name: nne-ctl …
	ip   string // underlay address
}

func newHost(name, ip string) *host { return &host{name: name, ns: namePrefix + name, ip: ip} }

// Hosts of the cluster.
var (
	hostCtl  = newHost("ctl", "10.99.0.10")
	hostEdge = newHost("edge", "10.99.0.11")
	hostN1   = newHost("node1", "10.99.0.21")
	hostN2   = newHost("node2", "10.99.0.22")
	hostOut  = newHost("out", "10.99.0.50")
	allHosts = []*host{hostCtl, hostEdge, hostN1, hostN2, hostOut}
)

// buildUnderlay creates the bridge and the namespaces; each step registers its own removal.
func buildUnderlay() error {
	steps := [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", bridgeAddr, prefixLen), "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	}
	registry.add("bridge "+bridgeName, func() { _, _ = run(nil, "ip", "link", "del", bridgeName) })
	for _, s := range steps {
		if _, err := run(nil, "ip", s...); err != nil {
			return fmt.Errorf("underlay bridge: %w", err)
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
	veth := namePrefix + "v-" + h.name // root end, on the bridge
	peer := namePrefix + "p-" + h.name // host end, renamed eth0 inside
	if _, err := run(nil, "ip", "netns", "add", h.ns); err != nil {
		return fmt.Errorf("host %s: %w", h.name, err)
	}
	ns := h.ns
	registry.add("namespace "+ns, func() {
		deleteNamespace(ns)
		// The kernel dismantles a deleted namespace asynchronously (minutes on a loaded machine),
		// and the root end of the veth lives until then: delete the pair now.
		_, _ = run(nil, "ip", "link", "del", veth)
	})
	cmds := [][]string{
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", h.ns},
		{"ip", "link", "set", veth, "master", bridgeName},
		{"ip", "link", "set", veth, "up"},
		{"ip", "-n", h.ns, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", h.ns, "addr", "add", fmt.Sprintf("%s/%d", h.ip, prefixLen), "dev", "eth0"},
		{"ip", "-n", h.ns, "link", "set", "eth0", "up"},
		{"ip", "-n", h.ns, "link", "set", "lo", "up"},
	}
	for _, c := range cmds {
		if _, err := run(nil, c[0], c[1:]...); err != nil {
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

// removeLeftovers deletes every nne-* namespace and root-namespace link an interrupted run left,
// and its temp dir unless that run was asked to keep it (NULLNET_E2E_KEEP leaves a marker).
func removeLeftovers(logf func(string, ...any)) {
	if dirs, err := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*")); err == nil {
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, keepMarker)); err == nil {
				continue
			}
			logf("removing leftover directory %s", d)
			os.RemoveAll(d)
		}
	}
	if out, err := run(nil, "ip", "netns", "list"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && strings.HasPrefix(f[0], namePrefix) {
				logf("removing leftover namespace %s", f[0])
				deleteNamespace(f[0])
			}
		}
	}
	if out, err := run(nil, "ip", "-o", "link", "show"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, namePrefix) {
				logf("removing leftover link %s", name)
				_, _ = run(nil, "ip", "link", "del", name)
			}
		}
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
