// Package servicepolicy carries a stack service's config.ServicePolicy from the stack files to
// every proxy: its storage form in Consul KV (one JSON document per service, identified by a
// digest that the definition's service meta repeats), its wire form (pb.ServicePolicy) and the
// proxy's read-only per-service index of the latest port-table bundle.
//
// The path: the leader's mirror writes the JSON under KVPrefix in the same Consul transaction
// as the definition, whose meta MetaDigest names the digest of that JSON; every server watches
// the prefix and joins it with the definitions (a definition whose digest the KV value does not
// match yet is incomplete); the port table carries the policy in PortMapping.policy and
// PortMappingBundle.http_services; the proxy swaps an Index per bundle.
package servicepolicy
