// Package overlaytest builds "hosts" for tests: network namespaces joined by an underlay bridge,
// all inside namespaces the test created, removed in t.Cleanup (also when the test fails).
// It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and fails, never skips, without it.
package overlaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Host is a network namespace standing in for one machine.
type Host struct {
	Name     string
	NS       netns.NsHandle
	Underlay netip.Addr // address on the host's "eth0"
}

// RequireRoot fails the test when it cannot create namespaces and devices.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces, bridges and VXLAN devices: run it as root " +
			"(CAP_NET_ADMIN + CAP_SYS_ADMIN), e.g. `sudo go test ./agent/overlay/...`")
	}
}

// Hosts creates n hosts named <prefix>-<random>-hN whose eth0 (192.168.<net>.N/24, MTU 1500)
// sit on one bridge in a separate "switch" namespace. Everything is deleted in t.Cleanup.
func Hosts(t testing.TB, prefix string, n int) []*Host {
	t.Helper()
	RequireRoot(t)
	id := randomID()
	sw := Namespace(t, fmt.Sprintf("%s-%s-sw", prefix, id))
	swh, err := netlink.NewHandleAt(sw)
	if err != nil {
		t.Fatalf("netlink handle in switch namespace: %v", err)
	}
	t.Cleanup(swh.Close)
	ul := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	ul.Name, ul.Flags = "ul", net.FlagUp
	if err := swh.LinkAdd(ul); err != nil {
		t.Fatalf("underlay bridge: %v", err)
	}
	hosts := make([]*Host, n)
	for i := range hosts {
		name := fmt.Sprintf("%s-%s-h%d", prefix, id, i+1)
		h := &Host{Name: name, NS: Namespace(t, name), Underlay: netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)})}
		veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h.NS)), PeerTxQLen: -1}
		veth.Name, veth.Flags, veth.MasterIndex = fmt.Sprintf("p%d", i+1), net.FlagUp, ul.Index
		if err := swh.LinkAdd(veth); err != nil {
			t.Fatalf("underlay veth for %s: %v", name, err)
		}
		hh := h.Handle(t)
		eth0, err := hh.LinkByName("eth0")
		if err != nil {
			t.Fatalf("%s: eth0: %v", name, err)
		}
		if err := hh.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: h.Underlay.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Fatalf("%s: address on eth0: %v", name, err)
		}
		for _, l := range []string{"eth0", "lo"} {
			link, err := hh.LinkByName(l)
			if err == nil {
				err = hh.LinkSetUp(link)
			}
			if err != nil {
				t.Fatalf("%s: bring up %s: %v", name, l, err)
			}
		}
		hosts[i] = h
	}
	return hosts
}

// Namespace creates a named network namespace (visible in `ip netns`) and deletes it in
// t.Cleanup.
func Namespace(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	RequireRoot(t)
	var h netns.NsHandle
	err := inNamespace(netns.None(), func() (err error) {
		h, err = netns.NewNamed(name) // switches the (locked) thread; inNamespace switches back
		return err
	})
	if err != nil {
		t.Fatalf("creating network namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("deleting network namespace %s: %v", name, err)
		}
	})
	return h
}

// inNamespace runs f on a locked OS thread inside ns (netns.None(): stay, f switches itself)
// and switches the thread back afterwards. Only a thread that is back in its own namespace is
// unlocked; otherwise it stays locked and Go discards it, so no goroutine ever runs in a
// namespace by accident. (Never leaving a thread behind matters: a main thread left in a test
// namespace would make /proc/self/net show that namespace to the whole process.)
func inNamespace(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return // thread stays locked: discarded
		}
		defer orig.Close()
		if ns.IsOpen() {
			if err := netns.Set(ns); err != nil {
				errc <- fmt.Errorf("entering namespace: %w", err)
				return
			}
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("returning to the original namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Handle is a netlink handle inside the host, closed in t.Cleanup.
func (h *Host) Handle(t testing.TB) *netlink.Handle {
	t.Helper()
	nh, err := netlink.NewHandleAt(h.NS)
	if err != nil {
		t.Fatalf("%s: netlink handle: %v", h.Name, err)
	}
	t.Cleanup(nh.Close)
	return nh
}

// Do runs f on an OS thread inside the host's namespace; sockets f opens stay in it.
func (h *Host) Do(f func() error) error {
	if err := inNamespace(h.NS, f); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

// Listen opens a listener inside the host.
func (h *Host) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("%s: listen %s %s: %v", h.Name, network, addr, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// Dial connects from inside the host, from local (may be empty) to addr.
func (h *Host) Dial(ctx context.Context, local, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// Sysctl writes a /proc/sys value inside the host (key like "net/ipv4/conf/all/rp_filter").
func (h *Host) Sysctl(key, value string) error {
	return h.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) })
}

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
