package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/devdemo"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
	"github.com/nullnet/nullnet/config"
)

// TestHTTPSEndToEnd runs every role in one agent against a real Consul: a certificate written
// into server.certs_dir reaches the proxy over WatchCertificates and is served by its HTTPS
// listener to curl (HTTP/2, the demo HTTP service behind it); the stack's https_redirect and
// hsts travel through Consul KV and the port table to the proxy (308 on HTTP, HSTS on HTTPS);
// a name without a certificate gets the alert unrecognized_name from openssl s_client.
func TestHTTPSEndToEnd(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("this test needs curl: %v", err)
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("this test needs openssl: %v", err)
	}
	srv := consultest.Start(t)
	dir := t.TempDir()
	certsDir := filepath.Join(dir, "certs")
	demo := strings.Replace(devdemo.StackFile(), "listen_port = 9000", fmt.Sprintf("listen_port = %d", freePort(t)), 1)
	demo = strings.Replace(demo, "listen_port = 9053", fmt.Sprintf("listen_port = %d", freeUDPPort(t)), 1)
	demo = strings.Replace(demo, "  service \"web.localhost\" {\n    timeout = \"5m\"\n",
		"  service \"web.localhost\" {\n    timeout = \"5m\"\n    https_redirect = true\n    hsts = \"180d\"\n", 1)
	if !strings.Contains(demo, "https_redirect") {
		t.Fatal("the demo stack's web.localhost block changed; update this test")
	}
	httpPort, httpsPort := freePort(t), freePort(t)
	cfgFile, _ := oneProcessFiles{Node: "https-test", Consul: srv.HTTPAddr, Stack: demo,
		ServerExtra: fmt.Sprintf("  certs_dir = %q", certsDir), ProxyHTTPPort: httpPort, ProxyHTTPSPort: httpsPort}.write(t, dir)
	res := config.Load([]config.Source{{Path: cfgFile}}, true) // -dev, then the file
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	runTestAgent(t, res.Config, "https")

	// The operator's certificate for the demo service, written while the agent runs.
	ca := certstoretest.NewCA(t)
	chain, key := ca.Valid(t, 90, devdemo.WebService)
	certstoretest.WritePair(t, certsDir, devdemo.WebService, chain, key)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	name := devdemo.WebService
	resolve := fmt.Sprintf("%s:%d:127.0.0.1", name, httpsPort)
	url := fmt.Sprintf("https://%s:%d/hello", name, httpsPort)
	var out string
	waitFor(t, "the certs_dir certificate served on the HTTPS listener, HTTP/2 to the demo service", 60*time.Second, func() bool {
		b, err := exec.Command(curl, "-sS", "-v", "--http2", "--max-time", "5", "--cacert", caFile, "--resolve", resolve, url).CombinedOutput()
		out = string(b)
		return err == nil && strings.Contains(out, "< HTTP/2 200") && strings.Contains(out, "nullnet demo HTTP service")
	})
	for _, want := range []string{"subject: CN=" + name, "SSL certificate verify ok", "X-Forwarded-Proto: https",
		"strict-transport-security: max-age=15552000"} {
		if !strings.Contains(out, want) {
			t.Errorf("curl output lacks %q:\n%s", want, out)
		}
	}

	// https_redirect from the stack file: plain HTTP gets 308 to the HTTPS port.
	var loc string
	waitFor(t, "the stack's https_redirect applied on the HTTP listener", 30*time.Second, func() bool {
		b, _ := exec.Command(curl, "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
			"-H", "Host: "+name, fmt.Sprintf("http://127.0.0.1:%d/a?b=c", httpPort)).CombinedOutput()
		loc = string(b)
		return loc == fmt.Sprintf("308 https://%s:%d/a?b=c", name, httpsPort)
	})

	// A name with no certificate: the alert, no certificate.
	cmd := exec.Command(openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", httpsPort), "-servername", "nosuch.localhost")
	cmd.Stdin = strings.NewReader("")
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "SSL alert number 112") || !strings.Contains(string(b), "no peer certificate available") {
		t.Errorf("unknown name: want alert 112 and no certificate:\n%s", b)
	}
}
