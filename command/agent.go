package command

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent"
	"github.com/nullnet/nullnet/config"
)

// AgentCommand runs the long-lived agent.
type AgentCommand struct {
	UI cli.Ui
	// ShutdownCh, when set, replaces SIGINT/SIGTERM (tests).
	ShutdownCh <-chan struct{}
}

func (c *AgentCommand) Help() string {
	return trim(`
Usage: nullnet agent [options]

  Starts the nullnet agent and runs until an interrupt. The roles it runs
  (server, client, proxy) come from the configuration blocks that are
  enabled. SIGHUP reloads the configuration (and a server's stacks); a
  configuration that does not validate is rejected and the running one is
  kept. SIGINT or SIGTERM stops the agent gracefully: a proxy first stops
  accepting and lets open connections and requests finish (up to
  proxy.drain_timeout); a second SIGINT or SIGTERM stops at once. The
  node's tunnel ends and Consul registrations stay in place, so a restart
  (an upgrade) keeps live connections (client.keep_tunnels_on_stop);
  'nullnet leave' removes them.

Options:
` + configFlagsHelp + `

  -dev
     Development mode: every role in one process, network = "direct",
     everything on 127.0.0.1, the demo stacks (built into the binary) and a
     replica of each demo service served by the agent itself: a TCP echo
     (proxy port 9000), a UDP echo (9053) and an HTTP page (Host
     web.localhost on 127.0.0.1:8080). Runs from any directory. Files given
     with -config-file still override these settings.

  -node=<name>
     Overrides node_name.

  -log-level=<level>
     Overrides log_level: trace, debug, info, warn or error.

  -log-json
     Overrides log_json: log in JSON.
`)
}

func (c *AgentCommand) Synopsis() string { return "Runs a nullnet agent" }

func (c *AgentCommand) Run(args []string) int {
	var sources []config.Source
	var dev, logJSON bool
	var node, level string
	fs := newFlagSet("agent")
	configFlags(fs, &sources)
	fs.BoolVar(&dev, "dev", false, "")
	fs.StringVar(&node, "node", "", "")
	fs.StringVar(&level, "log-level", "", "")
	fs.BoolVar(&logJSON, "log-json", false, "")
	if err := fs.Parse(args); err != nil {
		c.UI.Error(fmt.Sprintf("%v\n\n%s", err, c.Help()))
		return 2
	}
	if fs.NArg() > 0 {
		c.UI.Error(fmt.Sprintf("Unexpected arguments: %v\n\n%s", fs.Args(), c.Help()))
		return 2
	}
	load := func() (*config.Config, bool) {
		res := config.Load(sources, dev)
		overrides(res.Config, node, level, logJSON)
		if len(res.Diags) > 0 {
			var b strings.Builder
			_ = config.WriteDiagnostics(&b, res.Files, res.Diags)
			if res.Diags.HasErrors() {
				c.UI.Error(strings.TrimRight(b.String(), "\n"))
				return nil, false
			}
			c.UI.Warn(strings.TrimRight(b.String(), "\n"))
		}
		return res.Config, true
	}
	cfg, ok := load()
	if !ok {
		c.UI.Error("==> The configuration has errors; the agent did not start.")
		return 1
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "nullnet", Level: hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogJSON, Output: os.Stderr, TimeFormat: "2006-01-02T15:04:05.000Z0700"})
	if !cfg.TLS.Enabled() {
		logger.Warn("TLS is off: the control plane accepts any caller; see website/docs/operations/security.md")
	}
	a, err := agent.New(cfg, logger)
	if err != nil {
		logger.Error("agent failed to start", "error", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	// Reloads run on their own goroutine: they read files (the configuration, a server's stacks),
	// and the goroutine that handles signals must never wait on file I/O, or a stuck read would
	// make SIGTERM wait with it. SIGHUPs that arrive during a reload coalesce into one more.
	reloads := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-reloads:
			}
			newCfg, ok := load()
			if !ok {
				logger.Error("configuration reload rejected; keeping the running configuration")
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if err := a.Reload(newCfg); err != nil {
				logger.Error("configuration reload failed in part", "error", err)
			}
		}
	}()
	shutdownCh := c.ShutdownCh
	leaving := false
	for {
		select {
		case err := <-done:
			if err != nil {
				logger.Error("agent exited with an error", "error", err)
				return 1
			}
			return 0
		case <-shutdownCh:
			shutdownCh = nil
			cancel()
		case s := <-sigs:
			if s != syscall.SIGHUP {
				// The first signal drains (a proxy lets open connections finish, up to
				// proxy.drain_timeout) and stops, leaving the node's tunnel ends in place
				// (client.keep_tunnels_on_stop); a second one stops at once.
				if !leaving {
					leaving = true
					logger.Info("caught signal, draining then stopping; send it again to stop at once", "signal", s.String())
					a.Shutdown()
					continue
				}
				logger.Info("caught signal again, stopping now", "signal", s.String())
				cancel()
				continue
			}
			logger.Info("caught SIGHUP, reloading configuration")
			select {
			case reloads <- struct{}{}:
			default:
				logger.Info("a reload is already pending; this SIGHUP joins it")
			}
		}
	}
}

func overrides(cfg *config.Config, node, level string, logJSON bool) {
	if node != "" {
		cfg.NodeName = node
	}
	if level != "" {
		cfg.LogLevel = level
	}
	if logJSON {
		cfg.LogJSON = true
	}
}
