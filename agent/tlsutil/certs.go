// Package tlsutil is nullnet's mutual TLS: a private CA and per-node certificates (as
// `consul tls` makes them), tls.Configs for servers and agents, and the identity a peer's
// certificate proves (its node name and roles).
package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Roles a certificate can carry.
const (
	RoleServer = "server"
	RoleClient = "client"
	RoleProxy  = "proxy"
	// RoleCLI is an operator's certificate (`nullnet tls cert create -cli`): it may call the
	// HTTP API's writes but is no node, so it serves nothing and has no gRPC authority.
	RoleCLI = "cli"
)

// Domain is the TLS naming domain: server.<dc>.nullnet, <node>.<role>.<dc>.nullnet.
const Domain = "nullnet"

// ServerName is the name every server certificate carries and agents verify
// (verify_server_hostname), like Consul's server.<dc>.consul.
func ServerName(dc string) string { return RoleServer + "." + dc + "." + Domain }

// NodeName is the per-node identity name: <node>.<role>.<dc>.nullnet.
func NodeName(node, role, dc string) string { return node + "." + role + "." + dc + "." + Domain }

// CA is a certificate authority in memory.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// CreateCA makes a new self-signed CA valid for days.
func CreateCA(dc string, days int) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "nullnet CA " + dc, Organization: []string{"nullnet"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("signing CA: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// LoadCA reads a CA from PEM.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil {
		return nil, fmt.Errorf("CA certificate: no PEM block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("CA key: no PEM block")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// CertRequest describes a node certificate.
type CertRequest struct {
	Role       string // server | client | proxy
	Node       string
	Datacenter string
	Days       int
	DNSNames   []string
	IPs        []net.IP
}

// Issue signs a certificate for a node. A node certificate is usable both ways (server and
// client auth) because agents dial servers and servers are dialled, and names localhost and
// 127.0.0.1 too, so that `curl https://127.0.0.1:4700/...` on the host verifies the agent's HTTP
// API. A proxy certificate also carries the client role: a proxy host runs the node side. An
// operator (cli) certificate is for client auth only.
func (ca *CA) Issue(r CertRequest) (certPEM, keyPEM []byte, err error) {
	if r.Node == "" || strings.ContainsAny(r.Node, ". ") {
		return nil, nil, fmt.Errorf("node name %q: must be non-empty and contain no dots or spaces", r.Node)
	}
	dns := []string{NodeName(r.Node, r.Role, r.Datacenter)}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	switch r.Role {
	case RoleServer:
		dns = append(dns, ServerName(r.Datacenter))
	case RoleProxy:
		dns = append(dns, NodeName(r.Node, RoleClient, r.Datacenter))
	case RoleClient:
	case RoleCLI:
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, nil, fmt.Errorf("role %q: must be server, client, proxy or cli", r.Role)
	}
	if r.Role != RoleCLI {
		dns = append(dns, "localhost")
		r.IPs = append(r.IPs, net.IPv4(127, 0, 0, 1))
	}
	dns = append(dns, r.DNSNames...)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	if r.Days == 0 {
		r.Days = 365
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: dns[0], Organization: []string{"nullnet"}},
		DNSNames:     dns,
		IPAddresses:  r.IPs,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().AddDate(0, 0, r.Days),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), keyPEM, nil
}

// Identity is what a verified peer certificate proves.
type Identity struct {
	Node  string
	Roles map[string]bool
}

// Has reports whether the identity carries role.
func (id Identity) Has(role string) bool { return id.Roles[role] }

// IsNode reports whether the identity is a nullnet node's (server, client or proxy), not only
// an operator's.
func (id Identity) IsNode() bool {
	return id.Has(RoleServer) || id.Has(RoleClient) || id.Has(RoleProxy)
}

// IdentityOf reads the node and roles from a verified certificate's <node>.<role>.<dc>.nullnet
// names, for the given datacenter. Names of other datacenters prove nothing here.
func IdentityOf(cert *x509.Certificate, dc string) (Identity, error) {
	id := Identity{Roles: map[string]bool{}}
	suffix := "." + dc + "." + Domain
	for _, name := range cert.DNSNames {
		if !strings.HasSuffix(name, suffix) {
			continue
		}
		parts := strings.Split(strings.TrimSuffix(name, suffix), ".")
		if len(parts) != 2 {
			continue // server.<dc>.nullnet and the like
		}
		node, role := parts[0], parts[1]
		if node == "" {
			// ".proxy.<dc>.nullnet" names no node: taken as one, it would lend its role to
			// whichever node another name of the certificate gives (a fuzz finding).
			continue
		}
		if role != RoleServer && role != RoleClient && role != RoleProxy && role != RoleCLI {
			continue
		}
		if id.Node != "" && id.Node != node {
			return Identity{}, fmt.Errorf("certificate names two nodes (%s and %s)", id.Node, node)
		}
		id.Node = node
		id.Roles[role] = true
	}
	if id.Node == "" {
		return Identity{}, fmt.Errorf("certificate %q names no nullnet node in datacenter %s", cert.Subject.CommonName, dc)
	}
	return id, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
