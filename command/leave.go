package command

import (
	"context"
	"fmt"

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
