// Package consul holds nullnet's use of Consul: the API client built from the agent config, the
// blocking-query loop and the catalog mirror.
package consul

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/config"
)

// NewClient builds a Consul API client from the agent's consul block. The CONSUL_HTTP_*
// environment variables were already folded into cfg by config defaults, so the config in effect
// is the whole truth.
func NewClient(cfg config.Consul) (*api.Client, error) {
	c := api.DefaultConfig()
	c.Address = cfg.Address
	if cfg.SSL {
		c.Scheme = "https"
	}
	if strings.HasPrefix(c.Address, "https://") {
		c.Scheme = "https"
		c.Address = strings.TrimPrefix(c.Address, "https://")
	}
	c.Address = strings.TrimPrefix(c.Address, "http://")
	c.Datacenter = cfg.Datacenter
	c.Token = cfg.Token
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("consul: reading token_file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	c.TLSConfig = api.TLSConfig{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
	client, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("consul: creating client for %s: %w", cfg.Address, err)
	}
	return client, nil
}
