# Minimal Consul ACL policy for a nullnet server (see website/docs/operations/consul.md).
#
# Definitions are catalog entries on the virtual node "nullnet-stacks", one per stack service;
# their names are whatever the stacks say, so the server needs service write on every name.
node "nullnet-stacks" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
}
# Replicas and the nodes that run nullnet agents are read for every Proxy call.
node_prefix "" {
  policy = "read"
}
# Leader election: a Consul lock (session + key) so that two servers never fight over the mirror,
# and service policies: the leader writes one JSON document per stack service under
# "nullnet/policies/", every server reads the prefix (key_prefix "nullnet/policies/" read is the
# least a server that never leads needs). With server.acme, also the ACME state under
# nullnet/acme/ (account and certificate private keys, challenges) and its lock
# (website/docs/https.md#acme).
key_prefix "nullnet/" {
  policy = "write"
}
session_prefix "" {
  policy = "write"
}
# The server registers itself as service "nullnet" in its local agent.
agent_prefix "" {
  policy = "read"
}
