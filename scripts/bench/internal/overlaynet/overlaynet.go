// Package overlaynet builds the two-host topology of the overlay throughput figures: two network
// namespaces (the proxy host and the service host) joined by a veth underlay, with a kernel VXLAN
// tunnel and a bridge on each side, addressed as nullnet's overlay plan does for one net id.
// Everything lives inside the namespaces it creates, whose names start with "nnbn-", so removing
// the namespaces removes every device.
//
// It uses the ip(8) tool rather than netlink: this is the bench's fixture, not the product, and
// the same commands are what a reader would type to reproduce a figure by hand.
package overlaynet

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Plan addresses for net id 101 (10.0.0.0/8 + 101×8 = 10.0.3.40/29): +2 service-side bridge,
// +4 proxy-side bridge. The underlay is a private /24 that exists only between the namespaces.
const (
	NetID       = 101
	ServiceAddr = "10.0.3.42"
	ProxyAddr   = "10.0.3.44"
	// UnderlayProxy is the proxy host's underlay address (the service host reaches the proxy
	// host's Consul and nullnet server there).
	UnderlayProxy = "192.168.213.1"
	underlayA     = UnderlayProxy
	underlayB     = "192.168.213.2"
	underlayMTU   = 1500
	overlayMTU    = underlayMTU - 50
	vxlanPort     = "4789"
	bridgeDev     = "br_101"
	vxlanDev      = "vx_101"
	underlayDevA  = "nnbn-ua"
	underlayDevB  = "nnbn-ub"
)

// Topology is a built pair of namespaces.
type Topology struct {
	Proxy   string // namespace of the proxy host (client and relays run here)
	Service string // namespace of the service host (iperf3 server runs here)
}

// Build creates the namespaces nnbn-<tag>-px and nnbn-<tag>-sv and the tunnel. On error it
// removes what it made.
func Build(ctx context.Context, tag string) (*Topology, error) {
	t := &Topology{Proxy: "nnbn-" + tag + "-px", Service: "nnbn-" + tag + "-sv"}
	steps := [][]string{
		{"netns", "add", t.Proxy},
		{"netns", "add", t.Service},
		{"-n", t.Proxy, "link", "set", "lo", "up"},
		{"-n", t.Service, "link", "set", "lo", "up"},
		{"-n", t.Proxy, "link", "add", underlayDevA, "mtu", fmt.Sprint(underlayMTU), "type", "veth", "peer", "name", underlayDevB, "netns", t.Service},
		{"-n", t.Proxy, "addr", "add", underlayA + "/24", "dev", underlayDevA},
		{"-n", t.Service, "addr", "add", underlayB + "/24", "dev", underlayDevB},
		{"-n", t.Proxy, "link", "set", underlayDevA, "up"},
		{"-n", t.Service, "link", "set", underlayDevB, "up"},
	}
	steps = append(steps, end(t.Proxy, underlayDevA, underlayA, underlayB, ProxyAddr)...)
	steps = append(steps, end(t.Service, underlayDevB, underlayB, underlayA, ServiceAddr)...)
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			t.Remove()
			return nil, err
		}
	}
	return t, nil
}

// end is one tunnel end: a VXLAN device (VNI = net id) enslaved to a bridge holding the
// end's overlay address.
func end(ns, dev, local, remote, addr string) [][]string {
	return [][]string{
		{"-n", ns, "link", "add", bridgeDev, "type", "bridge"},
		{"-n", ns, "link", "add", vxlanDev, "mtu", fmt.Sprint(overlayMTU), "type", "vxlan", "id", fmt.Sprint(NetID),
			"local", local, "remote", remote, "dstport", vxlanPort, "dev", dev},
		{"-n", ns, "link", "set", vxlanDev, "master", bridgeDev},
		{"-n", ns, "addr", "add", addr + "/29", "dev", bridgeDev},
		{"-n", ns, "link", "set", vxlanDev, "up"},
		{"-n", ns, "link", "set", bridgeDev, "up"},
	}
}

// Remove deletes both namespaces and with them every device. It is safe to call twice.
func (t *Topology) Remove() {
	for _, ns := range []string{t.Proxy, t.Service} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
