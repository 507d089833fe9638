package client

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

// socket is one listening TCP socket or bound UDP socket of this host's network namespace.
type socket struct {
	proto string // "tcp" | "udp"
	addr  netip.Addr
	port  int
}

// procNetFiles are read for listeners. /proc/thread-self/net is the network namespace of the
// reading thread; /proc/net (= /proc/self/net) would be that of the process's main thread,
// which differs once any goroutine has entered another namespace on it (tests do).
var procNetFiles = []struct{ proto, path string }{
	{"tcp", "/proc/thread-self/net/tcp"}, {"tcp", "/proc/thread-self/net/tcp6"},
	{"udp", "/proc/thread-self/net/udp"}, {"udp", "/proc/thread-self/net/udp6"},
}

// scanListeners lists listening sockets: from a kernel-filtered sock_diag dump (sockdiag.go),
// or, where the kernel lacks inet_diag, from /proc (a missing file, IPv6 disabled, is skipped).
func scanListeners() ([]socket, error) {
	runtime.LockOSThread() // one thread, one namespace, for every read
	defer runtime.UnlockOSThread()
	if tcp, err := diagListeners("tcp"); err == nil {
		if udp, err := diagListeners("udp"); err == nil {
			return append(tcp, udp...), nil
		}
	}
	var out []socket
	for _, f := range procNetFiles {
		fh, err := os.Open(f.path)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("reading listeners: %w", err)
		}
		socks, err := parseProcNet(f.proto, fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("reading listeners from %s: %w", f.path, err)
		}
		out = append(out, socks...)
	}
	return out, nil
}

// Socket states in /proc/net/{tcp,udp}: TCP_LISTEN, and TCP_CLOSE for an unconnected (bound,
// receiving) UDP socket.
const (
	stateListen = "0A"
	stateClose  = "07"
)

// parseProcNet reads the kernel's socket table format:
//
//	sl  local_address rem_address   st ...
//	0: 0100007F:0016 00000000:0000 0A ...
//
// Addresses are the raw (network order) bytes printed as native-endian 32-bit words.
func parseProcNet(proto string, r io.Reader) ([]socket, error) {
	want := stateListen
	if proto == "udp" {
		want = stateClose
	}
	var out []socket
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != want {
			continue
		}
		hostHex, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("malformed local address %q", f[1])
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("malformed port %q", portHex)
		}
		addr, err := parseProcAddr(hostHex)
		if err != nil {
			return nil, err
		}
		out = append(out, socket{proto: proto, addr: addr, port: int(port)})
	}
	return out, sc.Err()
}

func parseProcAddr(h string) (netip.Addr, error) {
	if len(h) != 8 && len(h) != 32 {
		return netip.Addr{}, fmt.Errorf("malformed address %q", h)
	}
	raw := make([]byte, len(h)/2)
	for i := 0; i < len(h); i += 8 {
		w, err := strconv.ParseUint(h[i:i+8], 16, 32)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("malformed address %q", h)
		}
		binary.NativeEndian.PutUint32(raw[i/2:], uint32(w))
	}
	a, _ := netip.AddrFromSlice(raw)
	return a.Unmap(), nil
}

// listenerHealth judges whether a host service can be reached over the overlay from the sockets
// bound to its port: the tunnel delivers to this host's bridge address (+2 of the net id), so
// only a listener on all addresses (0.0.0.0 or ::) receives it. Upstream only checked that some
// socket used the port, so a 127.0.0.1 listener passed and failed silently.
//
// direct, when valid, is the address upstreams dial without a tunnel: a server in this process
// uses network = "direct" (as -dev does), so the upstream is the check address itself and a
// listener bound on exactly that address (127.0.0.1 in -dev) is reachable too.
func listenerHealth(name, proto string, port int, socks []socket, direct netip.Addr) (status, output string) {
	var bound []string
	onlyLoopback := true
	for _, s := range socks {
		if s.proto != proto || s.port != port {
			continue
		}
		if s.addr.IsUnspecified() {
			return api.HealthPassing, fmt.Sprintf("%s listens on %s: all addresses, reachable over the overlay",
				name, netip.AddrPortFrom(s.addr, uint16(port)))
		}
		if direct.IsValid() && s.addr == direct {
			return api.HealthPassing, fmt.Sprintf("%s listens on %s, the address upstreams dial with network = \"direct\"",
				name, netip.AddrPortFrom(s.addr, uint16(port)))
		}
		bound = append(bound, netip.AddrPortFrom(s.addr, uint16(port)).String())
		if !s.addr.IsLoopback() {
			onlyLoopback = false
		}
	}
	sort.Strings(bound)
	bound = compact(bound)
	switch {
	case len(bound) == 0:
		return api.HealthCritical, fmt.Sprintf("nothing listens on %s port %d", proto, port)
	case onlyLoopback:
		return api.HealthCritical, fmt.Sprintf("%s listens on %s only (loopback): tunnels deliver to this host's "+
			"bridge address, which a loopback listener never sees. Make it listen on 0.0.0.0:%d.",
			name, strings.Join(bound, ", "), port)
	default:
		return api.HealthWarning, fmt.Sprintf("%s listens on %s only: tunnels deliver to this host's bridge "+
			"address (10.x.y.z), not to these. Make it listen on 0.0.0.0:%d.", name, strings.Join(bound, ", "), port)
	}
}

func compact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
