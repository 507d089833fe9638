package tlsutil

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
)

// FuzzIdentityOf: whatever DNS names a certificate carries (a CA can sign anything an operator
// asks for), the identity read from it names exactly one node, only known roles, and only names
// of the configured datacenter.
func FuzzIdentityOf(f *testing.F) {
	for _, names := range []string{
		"n1.client.dc1.nullnet", "n1.proxy.dc1.nullnet,n1.client.dc1.nullnet", "server.dc1.nullnet",
		"n1.client.dc1.nullnet,n2.client.dc1.nullnet", "n1.client.dc2.nullnet", "..client.dc1.nullnet",
		"a.b.client.dc1.nullnet", "n1.admin.dc1.nullnet", "", "localhost,127.0.0.1",
	} {
		f.Add(names, "dc1")
	}
	f.Fuzz(func(t *testing.T, names, dc string) {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: "fuzz"}}
		if names != "" {
			cert.DNSNames = strings.Split(names, ",")
		}
		id, err := IdentityOf(cert, dc)
		if err != nil {
			return
		}
		if id.Node == "" || strings.Contains(id.Node, ".") {
			t.Fatalf("names %q: node %q", names, id.Node)
		}
		if len(id.Roles) == 0 {
			t.Fatalf("names %q: identity without a role", names)
		}
		for role := range id.Roles {
			want := id.Node + "." + role + "." + dc + "." + Domain
			found := false
			for _, n := range cert.DNSNames {
				found = found || n == want
			}
			if !found {
				t.Fatalf("names %q: role %s of node %s not named in the certificate", names, role, id.Node)
			}
		}
	})
}
