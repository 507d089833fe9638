package certstore

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// clockSkew is how far in the future a certificate's NotBefore may be and still be accepted
// (a certificate issued a moment ago on a host whose clock runs ahead).
const clockSkew = 5 * time.Minute

// Validate checks one certificate pair for domain ("example.com" or "*.example.com") at now:
// the chain parses, the key parses and matches the leaf, the leaf is valid at now, and it covers
// domain (a wildcard domain needs the wildcard name itself among the leaf's DNS names). The error
// is the reason, worded for an operator.
func Validate(domain string, certPEM, keyPEM []byte, now time.Time) (Certificate, error) {
	domain = NormalizeDomain(domain)
	if err := checkChain(certPEM); err != nil {
		return Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return Certificate{}, errors.New("private key does not match the certificate")
		}
		return Certificate{}, fmt.Errorf("private key: %s", strings.TrimPrefix(err.Error(), "tls: "))
	}
	leaf := pair.Leaf
	if leaf == nil { // GODEBUG=x509keypairleaf=0
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return Certificate{}, fmt.Errorf("fullchain.pem: the first certificate does not parse: %v", err)
		}
	}
	if now.After(leaf.NotAfter) {
		return Certificate{}, fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Add(clockSkew).Before(leaf.NotBefore) {
		return Certificate{}, fmt.Errorf("certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if err := covers(leaf, domain); err != nil {
		return Certificate{}, err
	}
	return Certificate{CertPEM: certPEM, KeyPEM: keyPEM, NotAfter: leaf.NotAfter}, nil
}

// checkChain checks that fullchain.pem holds certificates and nothing else (a chain with a
// stray key would hand the key to every client), and that the leaf parses. Intermediates are
// left to the clients that verify them.
func checkChain(certPEM []byte) error {
	rest := certPEM
	n := 0
	for ; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("fullchain.pem: block %d is a %q, not a CERTIFICATE", n+1, b.Type)
		}
		if n == 0 {
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return fmt.Errorf("fullchain.pem: the first certificate does not parse: %v", err)
			}
		}
	}
	if n == 0 {
		return errors.New("fullchain.pem: no PEM certificate found")
	}
	return nil
}

// covers checks that leaf is a certificate for domain.
func covers(leaf *x509.Certificate, domain string) error {
	if strings.HasPrefix(domain, "*.") {
		for _, n := range leaf.DNSNames {
			if strings.EqualFold(n, domain) {
				return nil
			}
		}
	} else if leaf.VerifyHostname(domain) == nil {
		return nil
	}
	names := leaf.DNSNames
	if len(names) > 5 {
		names = append(names[:5:5], fmt.Sprintf("and %d more", len(leaf.DNSNames)-5))
	}
	return fmt.Errorf("certificate does not cover %s (its names: %s)", domain, strings.Join(names, ", "))
}

// wildcardPrefix is how a wildcard domain's directory is named in certs_dir:
// "_wildcard.example.com" holds the certificate for "*.example.com" (a "*" in a file name is a
// trap in every shell).
const wildcardPrefix = "_wildcard."

// DomainOfDir maps a certs_dir entry name to its domain, or explains why it is not one.
func DomainOfDir(name string) (string, error) {
	d := strings.ToLower(name)
	wild := strings.HasPrefix(d, wildcardPrefix)
	if wild {
		d = d[len(wildcardPrefix):]
	}
	if strings.HasPrefix(d, "*.") {
		return "", fmt.Errorf("directory %q: name wildcard directories %s%s", name, wildcardPrefix, d[2:])
	}
	if err := checkDNSName(d); err != nil {
		return "", fmt.Errorf("directory %q is not a domain name: %v", name, err)
	}
	if wild {
		return "*." + d, nil
	}
	return d, nil
}

func checkDNSName(d string) error {
	if d == "" || len(d) > 253 {
		return errors.New("a domain name has 1 to 253 characters")
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return errors.New("each label has 1 to 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("a label neither starts nor ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%q is not allowed (letters, digits, '-' and '.')", c)
			}
		}
	}
	return nil
}
