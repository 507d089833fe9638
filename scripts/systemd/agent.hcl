# /etc/nullnet.d/agent.hcl: a client agent that is also a proxy (for nullnet-agent.service).
# Reference: website/docs/agent-config.md
node_name      = "edge-1"
datacenter     = "dc1"
data_dir       = "/var/lib/nullnet"
advertise_addr = "192.0.2.30"
log_level      = "info"

consul {
  address    = "127.0.0.1:8500"
  token_file = "/etc/nullnet.d/consul-token"
}

client {
  enabled = true

  # A host service exposed through stack "ops"; it must listen on 0.0.0.0.
  service "git.internal" {
    stack = "ops"
    port  = 22
  }
}

proxy {
  enabled   = true
  http_addr = ":80"
}
