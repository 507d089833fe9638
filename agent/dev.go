package agent

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/devdemo"
	"github.com/nullnet/nullnet/config"
)

// devSetup is what -dev adds to the configuration, at start and on every reload: the embedded
// demo stacks (written to a temporary directory when no file sets server.stacks_dir) and the demo
// backends, registered as host services of this agent's client role so that every demo service
// has a healthy replica. Files given with -config-file still win: a stacks_dir or a host service
// of the same name they set is kept.
type devSetup struct {
	logger    hclog.Logger
	stacksDir string // "" when the files set server.stacks_dir
	backends  *devdemo.Backends
}

func newDevSetup(cfg *config.Config, logger hclog.Logger) (*devSetup, error) {
	d := &devSetup{logger: logger}
	if cfg.Server.Enabled && cfg.Server.StacksDir == "" {
		dir, err := os.MkdirTemp("", "nullnet-dev-stacks-")
		if err != nil {
			return nil, fmt.Errorf("-dev: %w", err)
		}
		if err := devdemo.WriteStacks(dir); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("-dev: %w", err)
		}
		d.stacksDir = dir
		logger.Info("-dev: demo stacks written; edit them there, the server reloads on change", "dir", dir)
	}
	if cfg.Client.Enabled {
		ip := cfg.AdvertiseAddr
		if ip == "" {
			ip = "127.0.0.1"
		}
		b, err := devdemo.Listen(ip, logger)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("-dev: %w", err)
		}
		d.backends = b
	}
	return d, nil
}

// apply returns cfg with the dev additions; cfg itself is not changed.
func (d *devSetup) apply(cfg *config.Config) *config.Config {
	c := *cfg
	if c.Server.Enabled && c.Server.StacksDir == "" && d.stacksDir != "" {
		c.Server.StacksDir = d.stacksDir
	}
	if c.Client.Enabled && d.backends != nil {
		have := map[string]bool{}
		for _, s := range c.Client.Services {
			have[s.Name] = true
		}
		services := append([]config.HostService(nil), c.Client.Services...)
		for _, s := range d.backends.Services() {
			if !have[s.Name] {
				services = append(services, s)
			}
		}
		c.Client.Services = services
	}
	return &c
}

// run serves the demo backends until ctx ends, then removes the demo stacks directory.
func (d *devSetup) run(ctx context.Context) error {
	defer d.removeStacks()
	if d.backends == nil {
		<-ctx.Done()
		return nil
	}
	return d.backends.Run(ctx)
}

// close releases what newDevSetup made, for an agent that never ran.
func (d *devSetup) close() {
	if d.backends != nil {
		d.backends.Close()
	}
	d.removeStacks()
}

func (d *devSetup) removeStacks() {
	if d.stacksDir != "" {
		_ = os.RemoveAll(d.stacksDir)
	}
}
