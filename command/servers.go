package command

import (
	"context"

	"github.com/hashicorp/cli"
)

// ServersCommand lists the nullnet servers Consul knows.
type ServersCommand struct{ UI cli.Ui }

func (c *ServersCommand) Help() string {
	return trim(`
Usage: nullnet servers [options]

  Lists the nullnet servers registered in Consul (GET /v1/servers): name,
  address, gRPC and HTTP ports, version, health, and which one holds the
  leader lock.

Options:

  -json
     Print the API's JSON array.
` + httpFlagsHelp)
}

func (c *ServersCommand) Synopsis() string { return "Lists the servers and the leader" }

// apiServer mirrors one entry of GET /v1/servers.
type apiServer struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	GRPCPort   int    `json:"grpc_port"`
	HTTPPort   int    `json:"http_port"`
	Version    string `json:"version"`
	ConsulNode string `json:"consul_node"`
	Health     string `json:"health"`
	Leader     bool   `json:"leader"`
}

func (c *ServersCommand) Run(args []string) int {
	var asJSON bool
	var hf httpFlags
	fs := newFlagSet("servers")
	fs.BoolVar(&asJSON, "json", false, "")
	hf.register(fs)
	client, code := parseAPICommand(c.UI, fs, &hf, args, c.Help())
	if code != 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if asJSON {
		return client.printRaw(ctx, c.UI, "/v1/servers", nil)
	}
	var list []apiServer
	if _, err := client.get(ctx, "/v1/servers", nil, &list); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	if len(list) == 0 {
		c.UI.Output("No servers registered in Consul.")
		return 0
	}
	tw := newTable("NAME\tADDRESS\tGRPC\tHTTP\tVERSION\tHEALTH\tLEADER")
	for _, s := range list {
		lead := ""
		if s.Leader {
			lead = "leader"
		}
		tw.row("%s\t%s\t%d\t%d\t%s\t%s\t%s", s.Name, s.Address, s.GRPCPort, s.HTTPPort, s.Version, s.Health, lead)
	}
	tw.output(c.UI)
	return 0
}
