package certstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/server/certstore"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
)

func TestValidate(t *testing.T) {
	ca := certstoretest.NewCA(t)
	now := time.Now()
	good, goodKey := ca.Valid(t, 90, "example.com", "www.example.com")
	wild, wildKey := ca.Valid(t, 90, "*.example.com")
	_, otherKey := ca.Valid(t, 90, "example.com")
	expired, expiredKey := ca.Issue(t, []string{"example.com"}, now.Add(-48*time.Hour), now.Add(-time.Hour))
	future, futureKey := ca.Issue(t, []string{"example.com"}, now.Add(time.Hour), now.Add(48*time.Hour))
	soon, soonKey := ca.Issue(t, []string{"example.com"}, now.Add(time.Minute), now.Add(48*time.Hour)) // within clock skew
	cases := []struct {
		name, domain string
		cert, key    []byte
		err          string // substring; "" = valid
	}{
		{"exact", "example.com", good, goodKey, ""},
		{"second SAN, upper case", "WWW.Example.com.", good, goodKey, ""},
		{"wildcard dir", "*.example.com", wild, wildKey, ""},
		{"wildcard cert in exact dir", "a.example.com", wild, wildKey, ""},
		{"name mismatch", "other.org", good, goodKey, "does not cover other.org"},
		{"exact cert in wildcard dir", "*.example.com", good, goodKey, "does not cover *.example.com"},
		{"wildcard two levels", "a.b.example.com", wild, wildKey, "does not cover"},
		{"key does not match", "example.com", good, otherKey, "private key does not match"},
		{"expired", "example.com", expired, expiredKey, "expired at"},
		{"not yet valid", "example.com", future, futureKey, "not valid before"},
		{"clock skew tolerated", "example.com", soon, soonKey, ""},
		{"no certificate", "example.com", []byte("hello"), goodKey, "no PEM certificate"},
		{"empty certificate", "example.com", nil, goodKey, "no PEM certificate"},
		{"garbage certificate", "example.com", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), goodKey, "does not parse"},
		{"key in the chain", "example.com", append(append([]byte{}, good...), goodKey...), goodKey, "not a CERTIFICATE"},
		{"garbage key", "example.com", good, []byte("nope"), "private key:"},
		{"key swapped for cert", "example.com", good, good, "private key:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := certstore.Validate(tc.domain, tc.cert, tc.key, now)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if c.NotAfter.IsZero() || string(c.CertPEM) != string(tc.cert) {
					t.Fatalf("certificate = %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate error = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestDomainOfDir(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{"example.com", "example.com", ""},
		{"Example.COM", "example.com", ""},
		{"_wildcard.example.com", "*.example.com", ""},
		{"localhost", "localhost", ""},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", ""},
		{"*.example.com", "", "_wildcard.example.com"},
		{"_wildcard.*.example.com", "", "_wildcard."},
		{"a..b", "", "1 to 63"},
		{"-a.com", "", "'-'"},
		{"a_b.com", "", "not allowed"},
		{"a b", "", "not allowed"},
		{strings.Repeat("a", 64) + ".com", "", "1 to 63"},
		{strings.Repeat("a.", 127) + "com", "", "1 to 253"},
		{"_wildcard.", "", "1 to 253"},
	}
	for _, tc := range cases {
		got, err := certstore.DomainOfDir(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("DomainOfDir(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("DomainOfDir(%q) error = %v, want %q", tc.in, err, tc.err)
		}
	}
}

// FuzzDomainOfDir: any directory name maps to a lower-case domain that maps to itself again
// (wildcards through their _wildcard. spelling), or to an error; never a panic.
func FuzzDomainOfDir(f *testing.F) {
	for _, s := range []string{"example.com", "_wildcard.example.com", "*.x", "a..b", "-", "_wildcard.", "ÄÖ.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		d, err := certstore.DomainOfDir(name)
		if err != nil {
			return
		}
		if d != strings.ToLower(d) || d == "" {
			t.Fatalf("DomainOfDir(%q) = %q", name, d)
		}
		again := d
		if strings.HasPrefix(d, "*.") {
			again = "_wildcard." + d[2:]
		}
		if d2, err := certstore.DomainOfDir(again); err != nil || d2 != d {
			t.Fatalf("DomainOfDir(%q) = %q, but %q gives %q, %v", name, d, again, d2, err)
		}
	})
}
