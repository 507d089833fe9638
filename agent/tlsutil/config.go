package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/nullnet/nullnet/config"
)

// ServerConfig is the tls.Config for a server's gRPC and any agent's HTTP API. With
// verify_incoming, callers must present a certificate signed by the CA. nil when TLS is off.
func ServerConfig(c config.TLS) (*tls.Config, error) {
	if c.CertFile == "" {
		if c.VerifyIncoming {
			return nil, fmt.Errorf("tls: verify_incoming needs cert_file and key_file")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: loading cert_file %s / key_file %s: %w", c.CertFile, c.KeyFile, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.VerifyIncoming {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// ClientConfig is the tls.Config agents use to dial servers. With verify_outgoing the server's
// chain is checked against the CA; with verify_server_hostname its certificate must also be a
// server certificate of this datacenter (server.<dc>.nullnet), so a client or proxy certificate
// cannot impersonate a server. nil when TLS is off.
func ClientConfig(c config.TLS, dc string) (*tls.Config, error) {
	if !c.VerifyOutgoing && c.CertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: loading cert_file %s / key_file %s: %w", c.CertFile, c.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if !c.VerifyOutgoing {
		// Consul's meaning: without verify_outgoing the server is not verified at all.
		tc.InsecureSkipVerify = true
		return tc, nil
	}
	pool, err := loadPool(c.CAFile)
	if err != nil {
		return nil, err
	}
	tc.RootCAs = pool
	if c.VerifyServerHostname {
		tc.ServerName = ServerName(dc)
		return tc, nil
	}
	// Verify the chain but not the name the agent dialled (servers are often dialled by IP).
	tc.InsecureSkipVerify = true
	tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		return verifyChain(raw, pool)
	}
	return tc, nil
}

func verifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return fmt.Errorf("tls: server presented no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("tls: parsing server certificate: %w", err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("tls: server certificate not signed by ca_file: %w", err)
	}
	return nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, fmt.Errorf("tls: ca_file is required to verify peers")
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: reading ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: ca_file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}
