package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"
)

// FuzzParse: any input gives a name or one of the package's errors, never a panic; a name is
// short printable ASCII; a decided answer does not change when more bytes follow, and an
// ErrShort never turns into a different answer on a prefix.
func FuzzParse(f *testing.F) {
	f.Add(captureHello(f, &tls.Config{ServerName: "a.example", NextProtos: []string{"h2"}}))
	f.Add(captureHello(f, &tls.Config{ServerName: "b.example", MaxVersion: tls.VersionTLS12}))
	f.Add(helloWith(sniExt(0, "x.example")))
	f.Add(helloWith(nil))
	f.Add(records(message(f, helloWith(sniExt(0, "y.example"))), 3))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := Parse(b)
		switch {
		case err == nil:
			if name == "" || len(name) > MaxNameLen {
				t.Fatalf("bad name %q", name)
			}
			for _, c := range []byte(name) {
				if c <= ' ' || c >= 0x7f || (c >= 'A' && c <= 'Z') {
					t.Fatalf("name %q holds byte %#x", name, c)
				}
			}
		case errors.Is(err, ErrShort), errors.Is(err, ErrNotTLS), errors.Is(err, ErrMalformed),
			errors.Is(err, ErrNoServerName):
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if !errors.Is(err, ErrShort) {
			name2, err2 := Parse(append(bytes.Clone(b), 0x16, 3, 1, 0, 1, 0))
			if name2 != name || (err == nil) != (err2 == nil) || Reason(err) != Reason(err2) {
				t.Fatalf("more bytes changed the answer: %q %v → %q %v", name, err, name2, err2)
			}
		}
	})
}
