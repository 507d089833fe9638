package server

import (
	"context"
	"encoding/hex"
	"maps"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/config"
)

// Policies: the leader's mirror writes each stack service's policy as a JSON document under
// servicepolicy.KVPrefix, in the same transaction as the definition, whose meta names the
// document's digest. Every server watches the prefix with one more blocking query and joins
// the documents with the definitions in recompute. The catalog and KV queries answer
// separately, so a definition may name a digest whose document this server has not read yet:
// such a definition is incomplete, like a definitions node the leader is still writing, and
// holds the table back (never a half state: an allow-list published a moment after its
// service would leave it open in between).

// policyDoc is one document under the prefix, decoded once per KV answer.
type policyDoc struct {
	digest string
	policy config.ServicePolicy
	err    error // the value is not a policy (a hand edit)
}

// queryPolicies is the policies watch's query: every document under the prefix.
func (s *Server) queryPolicies(ctx context.Context, index uint64, wait time.Duration) (map[string]policyDoc, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	pairs, meta, err := s.cfg.Consul.KV().List(servicepolicy.KVPrefix, q)
	what, acl := "reading service policies", consul.ACLKeyPrefix(servicepolicy.KVPrefix, "read")
	if err != nil {
		return nil, 0, consul.QueryError(what, acl, err)
	}
	if err := consul.CheckFiltered(meta, what, acl); err != nil {
		return nil, 0, err
	}
	docs := make(map[string]policyDoc, len(pairs))
	for _, p := range pairs {
		if p == nil {
			continue
		}
		d := policyDoc{digest: servicepolicy.Digest(p.Value)}
		d.policy, d.err = servicepolicy.Decode(p.Value)
		docs[p.Key] = d
	}
	return docs, meta.LastIndex, nil
}

// samePolicyDocs compares two answers by digest.
func samePolicyDocs(a, b map[string]policyDoc) bool {
	return maps.EqualFunc(a, b, func(x, y policyDoc) bool { return x.digest == y.digest })
}

// validDigest accepts what servicepolicy.Digest produces.
func validDigest(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// joinPolicies gives every definition of view the policy its catalog entry announces. A
// definition whose document is missing or not the announced one yet counts as pending (the
// view is then incomplete) and keeps the policy of the published definition it replaces, or,
// when there is none, is left out: a service is never published without the policy it was
// defined with. A document that is the announced one but not a policy (written by hand) is
// logged once per digest and treated the same way, without holding the table. Called with
// st.mu held.
func (s *Server) joinPolicies(st *catalogState, view *catalogView) {
	kept := view.defs[:0]
	reported := map[string]bool{}
	for _, d := range view.defs {
		if d.announced == "" {
			kept = append(kept, d)
			continue
		}
		key := servicepolicy.Key(d.Stack, d.Service)
		doc, ok := st.kv[key]
		if ok && doc.digest == d.announced && doc.err == nil {
			d.Policy, d.PolicyDigest = doc.policy, doc.digest
			kept = append(kept, d)
			continue
		}
		if ok && doc.digest == d.announced {
			// The announced document is unreadable: waiting will not change it.
			rk := key + "@" + doc.digest
			reported[rk] = true
			if !st.reportedBadPolicy[rk] {
				s.logger.Warn("ignoring an unreadable service policy in Consul KV; the service keeps its previous policy (or stays unpublished)",
					"key", key, "digest", doc.digest, "error", doc.err)
			}
		} else {
			view.policiesPending++
		}
		prev, had := s.defs.Get(d.Service)
		if had && prev.Stack == d.Stack {
			d.Policy, d.PolicyDigest = prev.Policy, prev.PolicyDigest
			kept = append(kept, d)
			continue
		}
		if ok && doc.digest == d.announced {
			view.invalid[d.Stack+"/"+d.Service] = "its policy document " + key + " is not a valid policy: " + doc.err.Error()
		}
	}
	view.defs = kept
	st.reportedBadPolicy = reported
	if view.policiesPending > 0 {
		view.complete = false
	}
}
