# The definition that exposes the redis-demo Nomad job through the proxies: every proxy listens
# on TCP 6379 and builds a tunnel to a healthy redis-demo instance per client, torn down 10
# minutes after the client's last connection closed. Put it in the servers' stacks_dir, or:
#   consul kv put nullnet/stacks/demo @scripts/nomad/redis-demo.stack.hcl
stack "demo" {
  service "redis-demo" {
    protocol    = "tcp"
    listen_port = 6379
    timeout     = "10m"
  }
}
