package server

import (
	"github.com/nullnet/nullnet/agent/server/acme"
	"github.com/nullnet/nullnet/agent/server/certstore"
)

// certstoreSinks hands the ACME issuer's results to the certificate store that
// WatchCertificates streams: certificates as source "acme", challenges as they are.
type certstoreSinks struct{ *certstore.Store }

func (c certstoreSinks) SetSource(source string, certs map[string]acme.Certificate) {
	m := make(map[string]certstore.Certificate, len(certs))
	for d, x := range certs {
		m[d] = certstore.Certificate{CertPEM: x.CertPEM, KeyPEM: x.KeyPEM, NotAfter: x.NotAfter}
	}
	c.Store.SetSource(source, m)
}
