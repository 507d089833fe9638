# Minimal Consul ACL policy for a nullnet client or proxy agent (see
# website/docs/operations/consul.md). Replace the host service names with the ones the agent
# declares in its client { service "..." {} } blocks.
service "nullnet" {
  policy = "write"
}
# One rule per declared host service, e.g.:
service "sshd" {
  policy = "write"
}
# Servers are discovered through the "nullnet" service; host services' checks run on the node.
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
agent_prefix "" {
  policy = "read"
}
