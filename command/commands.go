// Package command is nullnet's CLI, one file per command, built on github.com/hashicorp/cli.
// Exit codes: 0 success, 1 error, 2 usage error.
package command

import (
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/cli"
	"github.com/nullnet/nullnet/agent/version"
)

// Run executes the CLI and returns the exit code.
func Run(args []string) int { return RunIO(args, os.Stdout, os.Stderr) }

// RunIO is Run with its output streams given (the docs tests compare the real help output with
// the samples in website/docs).
func RunIO(args []string, stdout, stderr io.Writer) int {
	ui := &cli.BasicUi{Reader: os.Stdin, Writer: stdout, ErrorWriter: stderr}
	c := cli.NewCLI("nullnet", version.Version)
	c.Args = args
	c.Commands = Commands(ui)
	c.HelpWriter = stdout
	c.ErrorWriter = stderr
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(stderr, "Error executing CLI: %v\n", err)
		return 1
	}
	if code == 127 { // unknown command: a usage error
		return 2
	}
	return code
}

// Commands is the command table; website/docs/cli.md documents each entry.
func Commands(ui cli.Ui) map[string]cli.CommandFactory {
	return map[string]cli.CommandFactory{
		"agent":           func() (cli.Command, error) { return &AgentCommand{UI: ui}, nil },
		"validate":        func() (cli.Command, error) { return &ValidateCommand{UI: ui}, nil },
		"version":         func() (cli.Command, error) { return &VersionCommand{UI: ui}, nil },
		"leave":           func() (cli.Command, error) { return &LeaveCommand{UI: ui}, nil },
		"stacks":          func() (cli.Command, error) { return &StacksCommand{UI: ui}, nil },
		"port-mappings":   func() (cli.Command, error) { return &PortMappingsCommand{UI: ui}, nil },
		"events":          func() (cli.Command, error) { return &EventsCommand{UI: ui}, nil },
		"sessions":        func() (cli.Command, error) { return &SessionsCommand{UI: ui}, nil },
		"sessions delete": func() (cli.Command, error) { return &SessionsDeleteCommand{UI: ui}, nil },
		"servers":         func() (cli.Command, error) { return &ServersCommand{UI: ui}, nil },
		"tls":             func() (cli.Command, error) { return &TLSCommand{UI: ui}, nil },
		"tls ca create":   func() (cli.Command, error) { return &TLSCACreateCommand{UI: ui}, nil },
		"tls cert create": func() (cli.Command, error) { return &TLSCertCreateCommand{UI: ui}, nil },
	}
}
