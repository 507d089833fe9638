package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// datagramBatch against real sockets: several datagrams (one of 60,000 B) arrive in one
// recvmmsg with their senders' addresses, and go back in one sendmmsg, on an IPv4 socket and
// on a dual-stack IPv6 one (where IPv4 clients are mapped addresses).
func TestDatagramBatchRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		listen string
		fam    int
		client net.IP
	}{
		{"127.0.0.1:0", unix.AF_INET, net.IPv4(127, 0, 0, 1)},
		{"[::]:0", unix.AF_INET6, net.IPv4(127, 0, 0, 1)}, // IPv4 client of a dual-stack socket
		{"[::]:0", unix.AF_INET6, net.IPv6loopback},       // IPv6 client: replies use its sockaddr_in6
	} {
		t.Run(tc.listen+"/"+tc.client.String(), func(t *testing.T) {
			pc, err := net.ListenPacket("udp", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			srv := pc.(*net.UDPConn)
			port := srv.LocalAddr().(*net.UDPAddr).Port
			rc, err := srv.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var fam int
			if err := rc.Control(func(fd uintptr) { fam, err = socketFamily(fd) }); err != nil || fam != tc.fam {
				t.Fatalf("family %d, %v; want %d", fam, err, tc.fam)
			}

			payloads := [][]byte{[]byte("one"), bytes.Repeat([]byte{'x'}, 60000), []byte("three"), {}, []byte("five")}
			cli, b := sendBurst(t, &net.UDPAddr{IP: tc.client, Port: port}, payloads)
			want := netip.MustParseAddrPort(cli.LocalAddr().String())
			recvAll(t, rc, b, len(payloads))
			for i, p := range payloads {
				if !bytes.Equal(b.data(i), p) {
					t.Fatalf("datagram %d: %d bytes, want %d", i, len(b.data(i)), len(p))
				}
				if a := b.addr(i); a != want {
					t.Fatalf("datagram %d from %s, want %s", i, a, want)
				}
			}
			for i := range payloads {
				b.setDest(i, int(b.msgs[i].n), want, fam)
			}
			var sent int
			var errno syscall.Errno
			if err := rc.Write(func(fd uintptr) bool {
				sent, errno = b.send(fd, 0, len(payloads))
				return errno != syscall.EAGAIN
			}); err != nil || errno != 0 || sent != len(payloads) {
				t.Fatalf("send: %d sent, %v %v", sent, err, errno)
			}
			buf := make([]byte, maxDatagram)
			for i, p := range payloads {
				_ = cli.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err := cli.Read(buf)
				if err != nil || !bytes.Equal(buf[:n], p) {
					t.Fatalf("reply %d: %d bytes, %v; want %d bytes", i, n, err, len(p))
				}
			}
		})
	}
}

// A run of one client's datagrams goes upstream in one sendmmsg on the session's connected
// socket: every datagram arrives, in order, at the upstream (not back at the client whose
// address the receive left in the slots), and the session counts each one.
func TestSessionSendsRunUpstream(t *testing.T) {
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	fd, err := dialUDPFD(netip.MustParseAddrPort(up.LocalAddr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)

	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	payloads := [][]byte{[]byte("first"), bytes.Repeat([]byte{'y'}, 9000), {}, []byte("last")}
	cli, b := sendBurst(t, ln.LocalAddr().(*net.UDPAddr), payloads)
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := len(payloads)
	recvAll(t, rc, b, got)

	s := &udpSession{l: &udpListener{}, state: stateReady, fd: fd}
	s.mu.RLock()
	s.sendUpstreamLocked(b, 0, got)
	s.mu.RUnlock()

	buf := make([]byte, maxDatagram)
	total := 0
	for i, p := range payloads {
		_ = up.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := up.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], p) {
			t.Fatalf("upstream datagram %d: %d bytes, %v; want %d bytes", i, n, err, len(p))
		}
		total += len(p)
	}
	if s.dgToUp.Load() != uint64(len(payloads)) || s.bytesToUp.Load() != uint64(total) {
		t.Fatalf("counted %d datagrams / %d bytes, want %d / %d", s.dgToUp.Load(), s.bytesToUp.Load(), len(payloads), total)
	}
	_ = cli.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := cli.Read(buf); err == nil {
		t.Fatalf("the client got %d bytes back: a slot kept its sender's address", n)
	}
}

// recvAll receives want datagrams (with their senders) into b's first slots, within 2 s.
func recvAll(t *testing.T, rc syscall.RawConn, b *datagramBatch, want int) {
	t.Helper()
	got := 0
	for deadline := time.Now().Add(2 * time.Second); got < want && time.Now().Before(deadline); {
		var n int
		var errno syscall.Errno
		if err := rc.Read(func(fd uintptr) bool {
			n, errno = b.recv(fd, got, b.slots(), true)
			return errno != syscall.EAGAIN
		}); err != nil || errno != 0 {
			t.Fatalf("recv: %v %v", err, errno)
		}
		got += n
	}
	if got != want {
		t.Fatalf("received %d datagrams, want %d", got, want)
	}
}

// sendBurst sends payloads to dst from a new client socket and returns it with an empty batch
// of 8 slots to receive them into; both are closed when the test ends.
func sendBurst(t *testing.T, dst *net.UDPAddr, payloads [][]byte) (*net.UDPConn, *datagramBatch) {
	t.Helper()
	cli, err := net.DialUDP("udp", nil, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	for _, p := range payloads {
		if _, err := cli.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	b, err := newDatagramBatch(8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.free)
	return cli, b
}
