package command

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/nullnet/nullnet/agent/tlsutil"
)

func runTLS(t *testing.T, c cli.Command, args ...string) string {
	t.Helper()
	ui := cli.NewMockUi()
	switch x := c.(type) {
	case *TLSCACreateCommand:
		x.UI = ui
	case *TLSCertCreateCommand:
		x.UI = ui
	}
	if code := c.Run(args); code != 0 {
		t.Fatalf("%v: exit %d: %s%s", args, code, ui.OutputWriter.String(), ui.ErrorWriter.String())
	}
	return ui.OutputWriter.String()
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTLSCertCreateCLI: -cli issues an operator certificate, for client authentication only,
// whose identity carries the cli role and no node role.
func TestTLSCertCreateCLI(t *testing.T) {
	t.Chdir(t.TempDir())
	runTLS(t, &TLSCACreateCommand{})
	out := runTLS(t, &TLSCertCreateCommand{}, "-cli")
	if !strings.Contains(out, "dc1-cli-nullnet-operator.pem") {
		t.Fatalf("output: %s", out)
	}
	c := readCert(t, "dc1-cli-nullnet-operator.pem")
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("operator certificate usages %v, want client auth only", c.ExtKeyUsage)
	}
	id, err := tlsutil.IdentityOf(c, "dc1")
	if err != nil || !id.Has(tlsutil.RoleCLI) || id.IsNode() || id.Node != "operator" {
		t.Fatalf("identity %+v %v, want operator with the cli role only", id, err)
	}
	runTLS(t, &TLSCertCreateCommand{}, "-cli", "-node", "alice")
	if _, err := os.Stat("dc1-cli-nullnet-alice.pem"); err != nil {
		t.Fatal(err)
	}
	ui := cli.NewMockUi()
	if code := (&TLSCertCreateCommand{UI: ui}).Run([]string{"-cli", "-client", "-node", "x"}); code != 2 {
		t.Fatalf("two roles: exit %d, want 2", code)
	}
}

// TestTLSNodeCertVerifiesOnLoopback: every node certificate names localhost and 127.0.0.1, so
// a client on the host verifies the agent's HTTPS API by those names (the docs' curl).
func TestTLSNodeCertVerifiesOnLoopback(t *testing.T) {
	t.Chdir(t.TempDir())
	runTLS(t, &TLSCACreateCommand{})
	for _, role := range []string{"-server", "-client", "-proxy"} {
		t.Run(role, func(t *testing.T) {
			runTLS(t, &TLSCertCreateCommand{}, role, "-node", "n1")
			base := "dc1-" + role[1:] + "-nullnet-n1"
			pair, err := tls.LoadX509KeyPair(base+".pem", base+"-key.pem")
			if err != nil {
				t.Fatal(err)
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ok")
			}), ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(ln)
			defer srv.Close()

			caPEM, _ := os.ReadFile("nullnet-agent-ca.pem")
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(caPEM)
			client := &http.Client{Timeout: 5 * time.Second,
				Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			defer client.CloseIdleConnections()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			for _, host := range []string{"127.0.0.1", "localhost"} {
				resp, err := client.Get(fmt.Sprintf("https://%s:%s/", host, port))
				if err != nil {
					t.Fatalf("https://%s: %v", host, err)
				}
				resp.Body.Close()
			}
		})
	}
}
