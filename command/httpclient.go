package command

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/cli"
)

// The CLI's HTTP API client, shared by every command that talks to a running agent (stacks,
// port-mappings, events, sessions ...).

const (
	// DefaultHTTPAddr is the agent's HTTP API when neither -http-addr nor NULLNET_HTTP_ADDR is set.
	DefaultHTTPAddr = "127.0.0.1:4700"
	// indexHeader is the blocking-query index the agent returns (X-Nullnet-Index).
	indexHeader = "X-Nullnet-Index"
)

// httpFlags are the connection flags of API commands. Each falls back to an environment
// variable, as Consul's CLI does.
type httpFlags struct {
	addr     string
	caFile   string
	certFile string
	keyFile  string
}

// register adds -http-addr, -ca-file, -client-cert and -client-key to fs.
func (f *httpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "http-addr", "", "")
	fs.StringVar(&f.caFile, "ca-file", "", "")
	fs.StringVar(&f.certFile, "client-cert", "", "")
	fs.StringVar(&f.keyFile, "client-key", "", "")
}

// httpFlagsHelp documents register's flags for a command's Help.
const httpFlagsHelp = `
HTTP API options:

  -http-addr=<address>
     The agent's HTTP API: host:port, or a URL with http:// or https://.
     Default: NULLNET_HTTP_ADDR, else 127.0.0.1:4700.

  -ca-file=<path>
     CA certificate to verify the agent's HTTPS certificate. Default:
     NULLNET_CACERT.

  -client-cert=<path>, -client-key=<path>
     Client certificate and key, when the agent verifies incoming
     connections. Default: NULLNET_CLIENT_CERT, NULLNET_CLIENT_KEY.
`

// apiClient calls the agent's HTTP API.
type apiClient struct {
	base *url.URL
	http *http.Client
}

func envOr(v, env string) string {
	if v != "" {
		return v
	}
	return os.Getenv(env)
}

// client builds the API client from the flags and environment.
func (f *httpFlags) client() (*apiClient, error) {
	addr := envOr(f.addr, "NULLNET_HTTP_ADDR")
	if addr == "" {
		addr = DefaultHTTPAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	base, err := url.Parse(addr)
	if err != nil || base.Host == "" || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, fmt.Errorf("invalid HTTP address %q: want host:port or http(s)://host:port", addr)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	caFile := envOr(f.caFile, "NULLNET_CACERT")
	certFile := envOr(f.certFile, "NULLNET_CLIENT_CERT")
	keyFile := envOr(f.keyFile, "NULLNET_CLIENT_KEY")
	if caFile != "" || certFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("reading CA file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no certificate found in CA file %s", caFile)
			}
		}
		if certFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("loading client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		transport.TLSClientConfig = tc
	}
	return &apiClient{base: base, http: &http.Client{Transport: transport}}, nil
}

// printRaw prints the API's answer for path exactly as it came: the listing commands' -json.
func (c *apiClient) printRaw(ctx context.Context, ui cli.Ui, path string, query url.Values) int {
	var raw json.RawMessage
	if _, err := c.get(ctx, path, query, &raw); err != nil {
		ui.Error(err.Error())
		return 1
	}
	ui.Output(strings.TrimSpace(string(raw)))
	return 0
}

// get fetches path (with query) and decodes the JSON body into out. It returns the
// X-Nullnet-Index header (0 when absent). A non-2xx answer becomes an error carrying the
// agent's {"error": ...} message.
func (c *apiClient) get(ctx context.Context, path string, query url.Values, out any) (uint64, error) {
	return c.send(ctx, http.MethodGet, path, query, out)
}

// put sends PUT path with no body and decodes a JSON answer into out (nil: ignored).
func (c *apiClient) put(ctx context.Context, path string, out any) error {
	_, err := c.send(ctx, http.MethodPut, path, nil, out)
	return err
}

// delete sends DELETE path.
func (c *apiClient) delete(ctx context.Context, path string) error {
	_, err := c.send(ctx, http.MethodDelete, path, nil, nil)
	return err
}

// send is every call to the agent: one request without a body, the index header, the JSON
// answer decoded into out, and a non-2xx answer turned into an error with the agent's message.
func (c *apiClient) send(ctx context.Context, method, path string, query url.Values, out any) (uint64, error) {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach the nullnet agent at %s (set -http-addr or NULLNET_HTTP_ADDR): %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		var apiErr struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &apiErr) == nil && apiErr.Error != "" {
			msg = apiErr.Error
		}
		return 0, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
	}
	var index uint64
	if h := resp.Header.Get(indexHeader); h != "" {
		index, _ = strconv.ParseUint(h, 10, 64)
	}
	if out != nil && len(body) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			return index, fmt.Errorf("decoding %s: %w", path, err)
		}
	}
	return index, nil
}

// requestTimeout bounds one non-blocking API call from the CLI.
const requestTimeout = 30 * time.Second

// parseAPICommand parses the flags of a command that talks to the HTTP API and takes no
// positional arguments, and builds its client. A non-zero code is the exit code to return
// (2: usage error), the error already shown.
func parseAPICommand(ui cli.Ui, fs *flag.FlagSet, hf *httpFlags, args []string, help string) (*apiClient, int) {
	if err := fs.Parse(args); err != nil {
		ui.Error(fmt.Sprintf("%v\n\n%s", err, help))
		return nil, 2
	}
	if fs.NArg() > 0 {
		ui.Error("This command takes no arguments.\n\n" + help)
		return nil, 2
	}
	client, err := hf.client()
	if err != nil {
		ui.Error(err.Error())
		return nil, 2
	}
	return client, 0
}
