package client

import (
	"net"
	"net/netip"
	"testing"
)

// TestSockDiagMatchesProc: the sock_diag dump and /proc agree on listeners, and connected
// sockets are left out of the dump.
func TestSockDiagMatchesProc(t *testing.T) {
	tl, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	// A connected TCP pair and a connected UDP socket must not show up as listeners.
	c, err := net.Dial("tcp4", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc, err := net.Dial("udp4", ul.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	tcp, err := diagListeners("tcp")
	if err != nil {
		t.Fatalf("sock_diag tcp: %v (the kernel needs inet_diag/tcp_diag)", err)
	}
	udp, err := diagListeners("udp")
	if err != nil {
		t.Fatalf("sock_diag udp: %v (the kernel needs inet_diag/udp_diag)", err)
	}
	want := []socket{
		{proto: "tcp", addr: netip.MustParseAddr("0.0.0.0"), port: tl.Addr().(*net.TCPAddr).Port},
		{proto: "udp", addr: netip.MustParseAddr("127.0.0.1"), port: ul.LocalAddr().(*net.UDPAddr).Port},
	}
	all := append(tcp, udp...)
	for _, w := range want {
		if !contains(all, w) {
			t.Errorf("sock_diag lacks %+v", w)
		}
	}
	if p := c.LocalAddr().(*net.TCPAddr).Port; containsPort(tcp, p) {
		t.Errorf("connected TCP socket :%d reported as a listener", p)
	}
	if p := uc.LocalAddr().(*net.UDPAddr).Port; containsPort(udp, p) {
		t.Errorf("connected UDP socket :%d reported as bound", p)
	}
}

func contains(all []socket, w socket) bool {
	for _, s := range all {
		if s == w {
			return true
		}
	}
	return false
}

func containsPort(all []socket, port int) bool {
	for _, s := range all {
		if s.port == port {
			return true
		}
	}
	return false
}
