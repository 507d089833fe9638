package command

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/hashicorp/cli"
)

// StacksCommand prints the stack definitions as the servers read them back from Consul.
type StacksCommand struct{ UI cli.Ui }

func (c *StacksCommand) Help() string {
	return trim(`
Usage: nullnet stacks [options]

  Lists every stack and its services as the server read them back from
  the Consul catalog (GET /v1/stacks): the definitions in force, which
  every server agrees on, not the files of one server.

Options:

  -json
     Print the API's JSON instead of a table.
` + httpFlagsHelp)
}

func (c *StacksCommand) Synopsis() string { return "Lists stacks and their services" }

// apiStack mirrors GET /v1/stacks.
type apiStack struct {
	Name     string `json:"name"`
	Services []struct {
		Service     string  `json:"service"`
		Protocol    string  `json:"protocol"`
		ListenPort  int     `json:"listen_port,omitempty"`
		EntryPoint  bool    `json:"entry_point"`
		TimeoutSecs *uint64 `json:"timeout_secs,omitempty"`
	} `json:"services"`
}

func (c *StacksCommand) Run(args []string) int {
	var asJSON bool
	var hf httpFlags
	fs := newFlagSet("stacks")
	fs.BoolVar(&asJSON, "json", false, "")
	hf.register(fs)
	client, code := parseAPICommand(c.UI, fs, &hf, args, c.Help())
	if code != 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var stacks []apiStack
	if _, err := client.get(ctx, "/v1/stacks", nil, &stacks); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	if asJSON {
		b, _ := json.MarshalIndent(stacks, "", "  ")
		c.UI.Output(string(b))
		return 0
	}
	if len(stacks) == 0 {
		c.UI.Output("No stacks.")
		return 0
	}
	tw := newTable("STACK\tSERVICE\tPROTOCOL\tLISTEN PORT\tTIMEOUT")
	for _, st := range stacks {
		for _, s := range st.Services {
			port, timeout := "-", "backend only"
			if s.ListenPort > 0 {
				port = strconv.Itoa(s.ListenPort)
			}
			if s.TimeoutSecs != nil {
				timeout = formatTimeout(*s.TimeoutSecs)
			}
			tw.row("%s\t%s\t%s\t%s\t%s", st.Name, s.Service, s.Protocol, port, timeout)
		}
	}
	tw.output(c.UI)
	return 0
}

// formatTimeout renders an idle timeout in seconds; 0 never idles out.
func formatTimeout(secs uint64) string {
	if secs == 0 {
		return "never"
	}
	return strconv.FormatUint(secs, 10) + "s"
}
