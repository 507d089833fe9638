package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nullnet/nullnet/agent/tlsutil"
	"github.com/nullnet/nullnet/config"
)

// The suite runs the cluster with mutual TLS on, as production should: every agent has a
// certificate for its node and role from a CA the suite makes, servers verify callers and
// enforce per-node authority, agents verify the server's name, and the HTTP APIs are HTTPS with
// client certificates. The suite reads the APIs as an operator with its own certificate.

// operatorNode is the identity the suite uses for the agents' HTTP APIs.
const operatorNode = "e2e-operator"

func (c *cluster) tlsDir() string { return filepath.Join(c.dir, "tls") }

// makePKI creates the CA and one certificate per host (server for ctl, proxy for edge, client
// for the nodes) plus the operator's, and points the suite's HTTP client at them.
func (c *cluster) makePKI() error {
	dir := c.tlsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := tlsutil.CreateCA("dc1", 1)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	issue := func(role, node string) error {
		cert, key, err := ca.Issue(tlsutil.CertRequest{Role: role, Node: node, Datacenter: "dc1", Days: 1})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, node+".pem"), cert, 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, node+"-key.pem"), key, 0o600)
	}
	for node, role := range map[string]string{hostCtl.name: tlsutil.RoleServer, hostEdge.name: tlsutil.RoleProxy,
		hostN1.name: tlsutil.RoleClient, hostN2.name: tlsutil.RoleClient, operatorNode: tlsutil.RoleCLI} {
		if err := issue(role, node); err != nil {
			return fmt.Errorf("certificate for %s: %w", node, err)
		}
	}
	// Agents' API certificates name their node, not the IP the suite dials: verify the chain.
	tc, err := tlsutil.ClientConfig(c.tlsFor(operatorNode), "dc1")
	if err != nil {
		return err
	}
	httpClient = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return nil
}

// tlsFor is the tls block of a node (the operator's has no verify_incoming: it only dials).
func (c *cluster) tlsFor(node string) config.TLS {
	return config.TLS{
		CAFile:               filepath.Join(c.tlsDir(), "ca.pem"),
		CertFile:             filepath.Join(c.tlsDir(), node+".pem"),
		KeyFile:              filepath.Join(c.tlsDir(), node+"-key.pem"),
		VerifyIncoming:       node != operatorNode,
		VerifyOutgoing:       true,
		VerifyServerHostname: node != operatorNode,
	}
}

// tlsBlock is the HCL an operator writes for a node.
func (c *cluster) tlsBlock(node string) string {
	t := c.tlsFor(node)
	return fmt.Sprintf("tls {\n  ca_file = %q\n  cert_file = %q\n  key_file = %q\n  verify_incoming = true\n  verify_outgoing = true\n  verify_server_hostname = true\n}\n",
		t.CAFile, t.CertFile, t.KeyFile)
}
