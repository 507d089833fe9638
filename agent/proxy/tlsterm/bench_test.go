package tlsterm

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/agent/proxy/tlsterm/testcert"
)

// benchHandshakes runs full TLS 1.3 handshakes (ECDSA P-256, no resumption) from parallel
// clients against ln, whose accepted connections are closed at once.
func benchHandshakes(b *testing.B, ln net.Listener, ca *testcert.CA) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if tc, ok := c.(*tls.Conn); ok {
					_ = tc.Handshake()
				}
				c.Close()
			}()
		}
	}()
	cfg := &tls.Config{ServerName: "a.example.com", RootCAs: ca.Pool, MinVersion: tls.VersionTLS13,
		ClientSessionCache: nil, NextProtos: []string{"http/1.1"}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
			if err != nil {
				b.Error(err)
				return
			}
			c.Close()
		}
	})
}

func benchSet(b *testing.B) (*certs.Set, *testcert.CA) {
	ca := testcert.NewCA(b)
	set := &certs.Set{}
	set.Replace(&certs.Snapshot{ByName: map[string]*tls.Certificate{"a.example.com": ca.Issue(b, "a.example.com").TLS}})
	return set, ca
}

// BenchmarkHandshakeListener: handshakes through Listener (SNI lookup, handshake before
// Accept, classification).
func BenchmarkHandshakeListener(b *testing.B) {
	set, ca := benchSet(b)
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := NewListener(inner, ListenerConfig{TLS: NewConfig(set)})
	defer ln.Close()
	benchHandshakes(b, ln, ca)
}

// BenchmarkHandshakeStdlib: the same handshakes through crypto/tls's own listener with one
// static certificate, the baseline.
func BenchmarkHandshakeStdlib(b *testing.B) {
	set, ca := benchSet(b)
	c, _ := set.Current().Lookup("a.example.com")
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := tls.NewListener(inner, &tls.Config{Certificates: []tls.Certificate{*c}, NextProtos: []string{"h2", "http/1.1"}})
	defer ln.Close()
	benchHandshakes(b, ln, ca)
}
