package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// FuzzDatagramBatchAddr: whatever the kernel (or a bug) leaves in a slot's socket address, addr
// reads it without panicking and returns either nothing or an address of the slot's family; an
// address written by setDest reads back unchanged (IPv6 scope included), and an IPv6 address
// is never written as an IPv4 destination.
func FuzzDatagramBatchAddr(f *testing.F) {
	seed := func(ap netip.AddrPort, fam int) []byte {
		b := &datagramBatch{msgs: make([]mmsghdr, 1), iovs: make([]unix.Iovec, 1), names: make([]unix.RawSockaddrInet6, 1)}
		b.setDest(0, 0, ap, fam)
		return unsafe.Slice((*byte)(unsafe.Pointer(&b.names[0])), unsafe.Sizeof(b.names[0]))
	}
	f.Add(seed(netip.MustParseAddrPort("203.0.113.9:53"), unix.AF_INET))
	f.Add(seed(netip.MustParseAddrPort("[2001:db8::1]:5353"), unix.AF_INET6))
	f.Add(seed(netip.MustParseAddrPort("192.0.2.1:1"), unix.AF_INET6))      // IPv4-mapped
	f.Add(seed(netip.MustParseAddrPort("[fe80::1%7]:5353"), unix.AF_INET6)) // link-local, scope 7
	f.Add(seed(netip.MustParseAddrPort("[::1]:9"), unix.AF_INET6))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		b := &datagramBatch{msgs: make([]mmsghdr, 1), iovs: make([]unix.Iovec, 1), names: make([]unix.RawSockaddrInet6, 1)}
		dst := unsafe.Slice((*byte)(unsafe.Pointer(&b.names[0])), unsafe.Sizeof(b.names[0]))
		copy(dst, raw)
		ap := b.addr(0)
		switch b.names[0].Family {
		case unix.AF_INET:
			if !ap.Addr().Is4() {
				t.Fatalf("AF_INET slot read as %v", ap)
			}
		case unix.AF_INET6:
			if !ap.IsValid() || (ap.Addr().Is4() && !netip.AddrFrom16(b.names[0].Addr).Is4In6()) {
				t.Fatalf("AF_INET6 slot read as %v", ap)
			}
		default:
			if ap.IsValid() {
				t.Fatalf("family %d read as %v", b.names[0].Family, ap)
			}
			return
		}
		// Round trip: writing what was read and reading it again gives the same address.
		fam := unix.AF_INET6
		if ap.Addr().Is4() && b.names[0].Family == unix.AF_INET {
			fam = unix.AF_INET
		}
		b.setDest(0, 0, ap, fam)
		if again := b.addr(0); again != ap {
			t.Fatalf("round trip of %v gave %v", ap, again)
		}
		if b.names[0].Family == unix.AF_INET6 && ap.Addr().Is6() && b.names[0].Scope_id != 0 &&
			ap.Addr().Zone() == "" {
			t.Fatalf("scope %d of %v lost", b.names[0].Scope_id, ap)
		}
		// An IPv6 client never gets an IPv4 destination (no panic, no address: the send fails).
		if ap.Addr().Is6() {
			b.setDest(0, 0, ap, unix.AF_INET)
			if b.msgs[0].hdr.Namelen != 0 {
				t.Fatalf("IPv6 %v written as an IPv4 destination", ap)
			}
		}
	})
}

// FuzzPortTableBundle: any bundle the server could push (decoded from arbitrary protobuf bytes)
// becomes a table of valid listeners without panicking: ports in range, valid service names,
// non-negative timeouts; diffing it against a second table is consistent; describing it works.
func FuzzPortTableBundle(f *testing.F) {
	add := func(b *pb.PortMappingBundle) {
		raw, err := proto.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, raw[:len(raw)/2])
	}
	add(&pb.PortMappingBundle{Version: 3, Mappings: []*pb.PortMapping{
		{Service: "redis", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 6379, IdleTimeoutSecs: 30},
		{Service: "dns", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: 53},
		{Service: "web", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP},
		{Service: "Bad Name", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 1},
		{Service: "x", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: 70000, IdleTimeoutSecs: 1 << 63},
		{Service: "y", Protocol: 42, ListenPort: 9},
		{Service: "b.example", Stack: "s", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TLS, ListenPort: 8443, IdleTimeoutSecs: 5},
		{Service: "a.example", Stack: "t", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TLS, ListenPort: 8443},
		{Service: "a.example", Stack: "t", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TLS, ListenPort: 8443},
	}})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var ba, bb pb.PortMappingBundle
		if proto.Unmarshal(a, &ba) != nil || proto.Unmarshal(b, &bb) != nil {
			return
		}
		want, problems := desiredTable(&ba)
		running, _ := desiredTable(&bb)
		for k, m := range want {
			if k != m.key() || m.Port == 0 || (m.Protocol != TCP && m.Protocol != UDP && m.Protocol != TLS) {
				t.Fatalf("bad entry %v under %v", m, k)
			}
			names := []string{m.Service}
			if m.Protocol == TLS {
				names = tlsRoutes(m.Service)
				if len(names) == 0 || !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
					t.Fatalf("tls entry %v: names not sorted and unique", m)
				}
			}
			for _, n := range names {
				if !config.ValidServiceName(n) || m.IdleTimeout < 0 {
					t.Fatalf("entry %v kept", m)
				}
			}
		}
		for _, p := range problems {
			if len(p) > 400 {
				t.Fatalf("problem text of %d bytes: %.80q…", len(p), p)
			}
		}
		d := diffTable(running, want)
		seen := map[listenerKey]string{}
		for _, m := range d.Open {
			seen[m.key()] += "o"
		}
		for _, m := range d.Update {
			seen[m.key()] += "u"
		}
		for _, k := range d.Close {
			seen[k] += "c"
		}
		for k, s := range seen {
			if len(s) != 1 {
				t.Fatalf("%v is in several actions: %q", k, s)
			}
		}
		for k := range want {
			if _, ok := running[k]; !ok && seen[k] != "o" {
				t.Fatalf("new key %v not opened", k)
			}
		}
		for k := range running {
			if _, ok := want[k]; !ok && seen[k] != "c" {
				t.Fatalf("removed key %v not closed", k)
			}
		}
		if s := describeTable(want); !strings.HasPrefix(s, "[") {
			t.Fatalf("describeTable = %q", s)
		}
	})
}
