package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/consul/api"
)

// ACLError is a Consul answer that ACLs denied or cut down: a 403, or a 200 whose results
// Consul filtered (X-Consul-Results-Filtered-By-ACLs). Either way the answer is not the truth
// about the catalog, so callers treat it as a failed query and keep their last good state: an
// empty port table built from a filtered answer would make every proxy close every listener.
type ACLError struct {
	// Query says what was being read or written.
	Query string
	// Missing names the ACL rule the token lacks, in Consul's policy syntax.
	Missing string
	// Filtered is true for a filtered 200, false for a 403.
	Filtered bool
	Err      error
}

func (e *ACLError) Error() string {
	how := "denied by Consul ACLs"
	if e.Filtered {
		how = "answered with results filtered by Consul ACLs"
	}
	msg := fmt.Sprintf("%s: %s; the token in consul.token needs %s", e.Query, how, e.Missing)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ACLError) Unwrap() error { return e.Err }

// ACLNodeRead and friends spell the rules in Consul's policy language.
func ACLNodeRead(node string) string { return fmt.Sprintf("node %q { policy = \"read\" }", node) }

// ACLAllRead is what reading the whole catalog and its health needs.
const ACLAllRead = `node_prefix "" { policy = "read" } and service_prefix "" { policy = "read" }`

// QueryError wraps err from a query as an *ACLError when Consul refused it (403, or an
// "ACL not found" / "Permission denied" body), otherwise with the query's name.
func QueryError(query, missing string, err error) error {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden ||
		strings.Contains(err.Error(), "Permission denied") || strings.Contains(err.Error(), "ACL not found") {
		return &ACLError{Query: query, Missing: missing, Err: err}
	}
	return fmt.Errorf("%s: %w", query, err)
}

// CheckFiltered turns an answer that ACLs filtered into an *ACLError.
func CheckFiltered(meta *api.QueryMeta, query, missing string) error {
	if meta != nil && meta.ResultsFilteredByACLs {
		return &ACLError{Query: query, Missing: missing, Filtered: true}
	}
	return nil
}

// SuspectFiltered judges an answer that lacks what every catalog holds (the "consul" service,
// the agents' serfHealth checks). Without a token Consul does not flag an answer its ACLs cut,
// so such an answer is the only sign; but a Consul that is still starting answers the same
// way. One more request tells them apart: with ACLs off Consul says so, and the answer is a
// plain error (retried like an outage, no ACL event); otherwise it is an *ACLError.
func SuspectFiltered(ctx context.Context, client *api.Client, query, missing string, why error) error {
	_, _, err := client.ACL().TokenReadSelf((&api.QueryOptions{}).WithContext(ctx))
	if err != nil && strings.Contains(err.Error(), "ACL support disabled") {
		return fmt.Errorf("%s: %w; Consul's ACLs are off, so Consul is still starting", query, why)
	}
	return &ACLError{Query: query, Missing: missing, Filtered: true, Err: why}
}
