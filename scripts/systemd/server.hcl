# /etc/nullnet-server.d/server.hcl: a server (for nullnet-server.service).
# Reference: website/docs/agent-config.md
node_name      = "ctl-1"
datacenter     = "dc1"
data_dir       = "/var/lib/nullnet-server"
advertise_addr = "192.0.2.10"
log_level      = "info"

consul {
  address    = "127.0.0.1:8500"
  token_file = "/etc/nullnet-server.d/consul-token"
}

server {
  enabled    = true
  stacks_dir = "/etc/nullnet-server.d/stacks"
  network    = "vxlan"
}
