package consul

import (
	"context"
	"fmt"

	"github.com/hashicorp/consul/api"
)

// readKV reads every key under KVPrefix (none when unset).
func (m *Mirror) readKV(ctx context.Context) (map[string][]byte, error) {
	if m.cfg.KVPrefix == "" {
		return nil, nil
	}
	pairs, _, err := m.cfg.Client.KV().List(m.cfg.KVPrefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, QueryError("reading KV prefix "+m.cfg.KVPrefix, ACLKeyPrefix(m.cfg.KVPrefix, "write"), err)
	}
	out := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		if p != nil {
			out[p.Key] = p.Value
		}
	}
	return out, nil
}

// writeACL is the rule a leader's token needs for its writes.
func (m *Mirror) writeACL() string {
	rule := fmt.Sprintf("node %q { policy = \"write\" } and service:write on every stack service", m.cfg.Node)
	if m.cfg.KVPrefix != "" {
		rule += " and " + ACLKeyPrefix(m.cfg.KVPrefix, "write")
	}
	return rule
}

// ACLKeyPrefix spells a key_prefix rule.
func ACLKeyPrefix(prefix, policy string) string {
	return fmt.Sprintf("key_prefix %q { policy = %q }", prefix, policy)
}

// packGroups packs groups of operations, in order, into transactions of at most maxOps
// operations without splitting a group (a group is smaller than maxOps).
func packGroups(groups []api.TxnOps, maxOps int) []api.TxnOps {
	var out []api.TxnOps
	var cur api.TxnOps
	for _, g := range groups {
		if len(cur)+len(g) > maxOps && len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, g...)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}
