package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hashicorp/cli"
)

// LeaveCommand asks a running agent to drain, stop and remove its tunnel ends and Consul
// registrations (PUT /v1/agent/leave).
type LeaveCommand struct{ UI cli.Ui }

func (c *LeaveCommand) Help() string {
	return trim(`
Usage: nullnet leave [options]

  Asks the agent to leave for good: a proxy stops accepting new
  connections, requests and UDP clients, lets open TCP connections and HTTP
  requests finish (up to proxy.drain_timeout), releases its uses; then the
  agent stops, removes the node's tunnel ends (connections through them end)
  and deregisters its host services and itself from Consul. SIGTERM drains
  the same way but leaves the tunnel ends and registrations in place for the
  next start (a restart, an upgrade). The command returns once the agent has
  accepted the request; the agent process exits when the drain ends.
` + httpFlagsHelp)
}

func (c *LeaveCommand) Synopsis() string { return "Drains and stops a running agent" }

func (c *LeaveCommand) Run(args []string) int {
	var hf httpFlags
	fs := newFlagSet("leave")
	hf.register(fs)
	client, code := parseAPICommand(c.UI, fs, &hf, args, c.Help())
	if client == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var out struct {
		DrainTimeout string `json:"drain_timeout"`
	}
	if err := client.put(ctx, "/v1/agent/leave", &out); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	msg := "The agent is leaving: it stops and removes its tunnel ends and Consul registrations."
	if out.DrainTimeout != "" {
		msg = fmt.Sprintf("The agent is leaving: the proxy drains for up to %s, then the agent stops and removes its tunnel ends and Consul registrations.", out.DrainTimeout)
	}
	c.UI.Output(msg)
	return 0
}

// put sends PUT path with no body and decodes a JSON answer into out; a non-2xx answer
// becomes an error with the agent's message.
func (c *apiClient) put(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base.JoinPath(path).String(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the nullnet agent at %s (set -http-addr or NULLNET_HTTP_ADDR): %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var apiErr struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &apiErr) == nil && apiErr.Error != "" {
			msg = apiErr.Error
		}
		return fmt.Errorf("PUT %s: %s: %s", path, resp.Status, msg)
	}
	if out != nil && len(body) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decoding %s: %w", path, err)
		}
	}
	return nil
}
