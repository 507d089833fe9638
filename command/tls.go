package command

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/hashicorp/cli"
	"github.com/nullnet/nullnet/agent/tlsutil"
)

// TLSCommand is the `nullnet tls` namespace.
type TLSCommand struct{ UI cli.Ui }

func (c *TLSCommand) Help() string {
	return trim(`
Usage: nullnet tls <subcommand> [options]

  Creates the private CA and node certificates for mutual TLS between agents,
  like "consul tls".

    nullnet tls ca create
    nullnet tls cert create -server -node ctl1
    nullnet tls cert create -proxy -node edge1
    nullnet tls cert create -client -node node1
    nullnet tls cert create -cli
`)
}

func (c *TLSCommand) Synopsis() string      { return "Creates a CA and node certificates for mutual TLS" }
func (c *TLSCommand) Run(args []string) int { return cli.RunResultHelp }

// TLSCACreateCommand writes a new CA.
type TLSCACreateCommand struct{ UI cli.Ui }

func (c *TLSCACreateCommand) Help() string {
	return trim(`
Usage: nullnet tls ca create [options]

  Creates a CA: nullnet-agent-ca.pem and nullnet-agent-ca-key.pem (mode 0600)
  in the current directory. Existing files are never overwritten.

Options:

  -days=<n>
     Validity in days (default 1825).

  -dc=<name>
     Datacenter named in the CA (default dc1).
`)
}

func (c *TLSCACreateCommand) Synopsis() string { return "Creates a new certificate authority" }

func (c *TLSCACreateCommand) Run(args []string) int {
	fs := newFlagSet("tls ca create")
	days := fs.Int("days", 1825, "")
	dc := fs.String("dc", "dc1", "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		c.UI.Error(fmt.Sprintf("%v\n\n%s", orArgs(err, fs.Args()), c.Help()))
		return 2
	}
	ca, err := tlsutil.CreateCA(*dc, *days)
	if err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	if err := writeNew("nullnet-agent-ca.pem", ca.CertPEM, 0o644); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	if err := writeNew("nullnet-agent-ca-key.pem", ca.KeyPEM, 0o600); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	c.UI.Output("==> Saved nullnet-agent-ca.pem\n==> Saved nullnet-agent-ca-key.pem")
	return 0
}

// TLSCertCreateCommand issues a node certificate.
type TLSCertCreateCommand struct{ UI cli.Ui }

func (c *TLSCertCreateCommand) Help() string {
	return trim(`
Usage: nullnet tls cert create [-server|-client|-proxy|-cli] -node NAME [options]

  Issues a certificate for one node, signed by the CA, naming the node and its
  role: <node>.<role>.<dc>.nullnet (and server.<dc>.nullnet for servers). Node
  certificates also name localhost and 127.0.0.1, so that the agent's HTTPS API
  verifies when called on the host itself. The server refuses a node that
  speaks for another node, and lets only proxy certificates use the ingress
  API. Writes <dc>-<role>-nullnet-<node>.pem and
  <dc>-<role>-nullnet-<node>-key.pem (mode 0600).

  -cli issues an operator's certificate instead (client authentication only):
  with verify_incoming, the HTTP API's writes such as DELETE /v1/sessions/<id>
  need it, as Consul's "tls cert create -cli".

Options:

  -server, -client, -proxy, -cli
     The role (exactly one). A proxy certificate also carries the client role.

  -node=<name>
     The node's node_name. Required, except with -cli, where it names the
     operator (default "operator").

  -dc=<name>
     Datacenter (default dc1).

  -days=<n>
     Validity in days (default 365).

  -ca=<file>, -key=<file>
     The CA certificate and key (default nullnet-agent-ca.pem and
     nullnet-agent-ca-key.pem).

  -additional-dnsname=<name>, -additional-ipaddress=<ip>
     Extra names for the certificate. Repeatable.
`)
}

func (c *TLSCertCreateCommand) Synopsis() string { return "Issues a node certificate" }

func (c *TLSCertCreateCommand) Run(args []string) int {
	fs := newFlagSet("tls cert create")
	server := fs.Bool("server", false, "")
	client := fs.Bool("client", false, "")
	proxy := fs.Bool("proxy", false, "")
	cliRole := fs.Bool("cli", false, "")
	node := fs.String("node", "", "")
	dc := fs.String("dc", "dc1", "")
	days := fs.Int("days", 365, "")
	caFile := fs.String("ca", "nullnet-agent-ca.pem", "")
	keyFile := fs.String("key", "nullnet-agent-ca-key.pem", "")
	var dns, ips multiFlag
	fs.Var(&dns, "additional-dnsname", "")
	fs.Var(&ips, "additional-ipaddress", "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		c.UI.Error(fmt.Sprintf("%v\n\n%s", orArgs(err, fs.Args()), c.Help()))
		return 2
	}
	var roles []string
	for role, on := range map[string]bool{tlsutil.RoleServer: *server, tlsutil.RoleClient: *client,
		tlsutil.RoleProxy: *proxy, tlsutil.RoleCLI: *cliRole} {
		if on {
			roles = append(roles, role)
		}
	}
	if len(roles) == 1 && roles[0] == tlsutil.RoleCLI && *node == "" {
		*node = "operator"
	}
	if len(roles) != 1 || *node == "" {
		c.UI.Error("Give exactly one of -server, -client, -proxy, -cli, and -node.\n\n" + c.Help())
		return 2
	}
	var ipList []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			c.UI.Error(fmt.Sprintf("-additional-ipaddress %q is not an IP address", s))
			return 2
		}
		ipList = append(ipList, ip)
	}
	certPEM, err := os.ReadFile(*caFile)
	if err != nil {
		c.UI.Error(fmt.Sprintf("reading CA certificate: %v (create one with: nullnet tls ca create)", err))
		return 1
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		c.UI.Error(fmt.Sprintf("reading CA key: %v", err))
		return 1
	}
	ca, err := tlsutil.LoadCA(certPEM, keyPEM)
	if err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	cert, key, err := ca.Issue(tlsutil.CertRequest{Role: roles[0], Node: *node, Datacenter: *dc, Days: *days,
		DNSNames: dns, IPs: ipList})
	if err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	base := fmt.Sprintf("%s-%s-nullnet-%s", *dc, roles[0], *node)
	if err := writeNew(base+".pem", cert, 0o644); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	if err := writeNew(base+"-key.pem", key, 0o600); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	c.UI.Output(fmt.Sprintf("==> Saved %s.pem\n==> Saved %s-key.pem", base, base))
	return 0
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// writeNew refuses to overwrite: losing a CA key is not recoverable.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

func orArgs(err error, args []string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("unexpected arguments: %v", args)
}
