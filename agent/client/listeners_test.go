package client

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestParseProcNet(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 186 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 287 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 288 1 0 100 0 0 10 0
`
	got, err := parseProcNet("tcp", strings.NewReader(tcp))
	if err != nil {
		t.Fatal(err)
	}
	want := []socket{{"tcp", netip.MustParseAddr("0.0.0.0"), 22}, {"tcp", netip.MustParseAddr("127.0.0.1"), 8080}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v (established sockets are not listeners)", got, want)
	}

	tcp6 := `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A
   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A
`
	got, err = parseProcNet("tcp", strings.NewReader(tcp6))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].addr != netip.IPv6Unspecified() || got[1].addr != netip.IPv6Loopback() ||
		got[2].addr != netip.MustParseAddr("127.0.0.1") || got[2].port != 8082 {
		t.Fatalf("tcp6: %v", got)
	}

	udp := `   sl  local_address rem_address   st
  1: 00000000:0035 00000000:0000 07
  2: 0100007F:0035 0100007F:1234 01
`
	got, err = parseProcNet("udp", strings.NewReader(udp))
	if err != nil || len(got) != 1 || got[0].port != 53 || got[0].proto != "udp" {
		t.Fatalf("udp: %v, %v (only unconnected bound sockets receive)", got, err)
	}

	if _, err := parseProcNet("tcp", strings.NewReader("hdr\n 0: zz:0016 00000000:0000 0A\n")); err == nil {
		t.Fatal("malformed address: want an error")
	}
}

// The real socket table of this process's namespace sees a listener we open.
func TestScanListenersSeesRealSocket(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	socks, err := scanListeners()
	if err != nil {
		t.Fatal(err)
	}
	status, out := listenerHealth("svc", "tcp", port, socks, netip.Addr{})
	if status != api.HealthCritical || !strings.Contains(out, "127.0.0.1") || !strings.Contains(out, "loopback") {
		t.Fatalf("%s: %s; want critical naming the loopback listener", status, out)
	}
}

func TestListenerHealth(t *testing.T) {
	s := func(proto, addr string, port int) socket { return socket{proto, netip.MustParseAddr(addr), port} }
	cases := []struct {
		name   string
		socks  []socket
		proto  string
		status string
		says   string
		direct string // the address upstreams dial with network = "direct", if any
	}{
		{"nothing", nil, "tcp", api.HealthCritical, "nothing listens on tcp port 22", ""},
		{"other port", []socket{s("tcp", "0.0.0.0", 23)}, "tcp", api.HealthCritical, "nothing listens", ""},
		{"other protocol", []socket{s("udp", "0.0.0.0", 22)}, "tcp", api.HealthCritical, "nothing listens", ""},
		{"wildcard v4", []socket{s("tcp", "0.0.0.0", 22)}, "tcp", api.HealthPassing, "all addresses", ""},
		{"wildcard v6", []socket{s("tcp", "::", 22)}, "tcp", api.HealthPassing, "all addresses", ""},
		{"loopback only", []socket{s("tcp", "127.0.0.1", 22), s("tcp", "::1", 22)}, "tcp", api.HealthCritical, "127.0.0.1:22, [::1]:22 only (loopback)", ""},
		{"specific address", []socket{s("tcp", "192.0.2.7", 22)}, "tcp", api.HealthWarning, "192.0.2.7:22 only", ""},
		{"loopback and wildcard", []socket{s("tcp", "127.0.0.1", 22), s("tcp", "0.0.0.0", 22)}, "tcp", api.HealthPassing, "all addresses", ""},
		{"udp wildcard", []socket{s("udp", "0.0.0.0", 22)}, "udp", api.HealthPassing, "all addresses", ""},
		{"direct loopback", []socket{s("tcp", "127.0.0.1", 22)}, "tcp", api.HealthPassing, "network = \"direct\"", "127.0.0.1"},
		{"direct udp loopback", []socket{s("udp", "127.0.0.1", 22)}, "udp", api.HealthPassing, "network = \"direct\"", "127.0.0.1"},
		{"direct other address", []socket{s("tcp", "127.0.0.2", 22)}, "tcp", api.HealthCritical, "loopback", "127.0.0.1"},
	}
	for _, tc := range cases {
		var direct netip.Addr
		if tc.direct != "" {
			direct = netip.MustParseAddr(tc.direct)
		}
		status, out := listenerHealth("sshd", tc.proto, 22, tc.socks, direct)
		if status != tc.status || !strings.Contains(out, tc.says) {
			t.Errorf("%s: %s %q; want %s containing %q", tc.name, status, out, tc.status, tc.says)
		}
	}
}
