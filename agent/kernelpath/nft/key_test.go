package nft

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestValidate(t *testing.T) {
	good := Entry{Key: Key{Client: netip.MustParseAddr("10.0.0.1"), Proto: TCP, Port: 80}, Target: netip.MustParseAddrPort("10.1.0.1:8080"), Mark: 1}
	if err := good.validate(); err != nil {
		t.Fatalf("valid entry rejected: %v", err)
	}
	for name, mut := range map[string]func(*Entry){
		"ipv6 client":  func(e *Entry) { e.Client = netip.MustParseAddr("fd00::1") },
		"no client":    func(e *Entry) { e.Client = netip.Addr{} },
		"icmp":         func(e *Entry) { e.Proto = 1 },
		"port 0":       func(e *Entry) { e.Port = 0 },
		"ipv6 target":  func(e *Entry) { e.Target = netip.MustParseAddrPort("[fd00::1]:80") },
		"target port0": func(e *Entry) { e.Target = netip.MustParseAddrPort("10.1.0.1:0") },
		"mark 0":       func(e *Entry) { e.Mark = 0 },
	} {
		e := good
		mut(&e)
		if err := e.validate(); err == nil {
			t.Errorf("%s: accepted %v", name, e)
		}
	}
}

// TestKeyLayout pins the byte layout the kernel compares (checked against
// `nft --debug=netlink add element`: 0a000001 06000000 00500000).
func TestKeyLayout(t *testing.T) {
	k := Key{Client: netip.MustParseAddr("10.0.0.1"), Proto: TCP, Port: 80}
	want := []byte{10, 0, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0}
	if got := encodeKey(k); !bytes.Equal(got, want) {
		t.Fatalf("encodeKey = %x, want %x", got, want)
	}
	tg := netip.MustParseAddrPort("10.1.0.1:8080")
	if got := encodeTarget(tg); !bytes.Equal(got, []byte{10, 1, 0, 1, 0x1f, 0x90, 0, 0}) {
		t.Fatalf("encodeTarget = %x", got)
	}
}

// FuzzDecode: the decoders read what the kernel returns for our maps (possibly written by an
// older or foreign instance): never panic, and whatever they accept encodes back to the input.
func FuzzDecode(f *testing.F) {
	f.Add(encodeKey(Key{Client: netip.MustParseAddr("10.0.0.1"), Proto: UDP, Port: 53}), encodeTarget(netip.MustParseAddrPort("10.9.9.9:5353")), encodeMark(7))
	f.Add([]byte{}, []byte{1, 2, 3}, []byte{0})
	f.Fuzz(func(t *testing.T, key, target, mark []byte) {
		if k, err := decodeKey(key); err == nil && !bytes.Equal(encodeKey(k), key) {
			t.Fatalf("key %x decodes to %v, encodes to %x", key, k, encodeKey(k))
		}
		if tg, err := decodeTarget(target); err == nil && !bytes.Equal(encodeTarget(tg), target) {
			t.Fatalf("target %x decodes to %v, encodes to %x", target, tg, encodeTarget(tg))
		}
		if m, err := decodeMark(mark); err == nil && !bytes.Equal(encodeMark(m), mark) {
			t.Fatalf("mark %x decodes to %d", mark, m)
		}
	})
}
