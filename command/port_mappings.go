package command

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/cli"
)

// PortMappingsCommand prints the port table the proxies listen by.
type PortMappingsCommand struct{ UI cli.Ui }

func (c *PortMappingsCommand) Help() string {
	return trim(`
Usage: nullnet port-mappings [options]

  Prints the port table (GET /v1/port-mappings): every TCP, UDP and TLS
  port the proxies listen on, the service behind it and its idle timeout.
  A port shared by tls services (routed by SNI) has one row per service.
  http services are routed by Host header and are not in this table.

Options:

  -json
     Print a JSON array of objects with stack, service, protocol,
     listen_port and idle_timeout_secs.
` + httpFlagsHelp)
}

func (c *PortMappingsCommand) Synopsis() string { return "Prints the TCP/UDP/TLS port table" }

// apiMapping mirrors one entry of GET /v1/port-mappings.
type apiMapping struct {
	Stack           string `json:"stack"`
	Service         string `json:"service"`
	Protocol        string `json:"protocol"`
	ListenPort      int    `json:"listen_port"`
	IdleTimeoutSecs uint64 `json:"idle_timeout_secs"`
}

func (c *PortMappingsCommand) Run(args []string) int {
	var asJSON bool
	var hf httpFlags
	fs := newFlagSet("port-mappings")
	fs.BoolVar(&asJSON, "json", false, "")
	hf.register(fs)
	client, code := parseAPICommand(c.UI, fs, &hf, args, c.Help())
	if code != 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	mappings := []apiMapping{}
	version, err := client.get(ctx, "/v1/port-mappings", nil, &mappings)
	if err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	if asJSON {
		b, _ := json.MarshalIndent(mappings, "", "  ")
		c.UI.Output(string(b))
		return 0
	}
	if len(mappings) == 0 {
		c.UI.Output(fmt.Sprintf("No port mappings (table version %d).", version))
		return 0
	}
	tw := newTable("PROTOCOL\tLISTEN PORT\tSERVICE\tSTACK\tIDLE TIMEOUT")
	for _, m := range mappings {
		tw.row("%s\t%d\t%s\t%s\t%s", m.Protocol, m.ListenPort, m.Service, m.Stack, formatTimeout(m.IdleTimeoutSecs))
	}
	tw.output(c.UI)
	return 0
}
