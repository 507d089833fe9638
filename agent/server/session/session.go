// Package session is the control plane's session table: one session per (service, client ip,
// proxy node), the net-id pool, use counting with lease ids and the idle timers.
//
// Everything about sessions goes through the Table type, so that moving the state into Consul
// (for several servers) replaces this package's internals and not its callers. The Table knows
// nothing about gRPC or Consul: building and removing tunnels is the Commander's job, which makes
// the lifecycle testable with a fake commander.
package session

import (
	"context"
	"errors"
	"time"
)

// Key identifies a session.
type Key struct {
	Service   string `json:"service"`
	ClientIP  string `json:"client_ip"`
	ProxyNode string `json:"proxy_node"`
}

// Replica is one healthy instance of a service that a session can be built to.
type Replica struct {
	// ID is unique across the catalog: "<consul node>/<service id>".
	ID string `json:"id"`
	// Node is the nullnet node that serves the replica (the tunnel's service side).
	Node    string `json:"node"`
	Address string `json:"address"`
	Port    int    `json:"port"`
}

// State of a session.
type State string

const (
	StateCreating    State = "creating"
	StateActive      State = "active"
	StateTearingDown State = "tearing_down"
)

// Teardown reasons (also the "reason" field of session_torn_down events and the label of the
// teardowns metric).
const (
	ReasonIdleTimeout      = "idle_timeout"
	ReasonReplicaUnhealthy = "replica_unhealthy"
	ReasonReplicaGone      = "replica_gone"
	ReasonNodeGone         = "node_gone"
	ReasonProxyGone        = "proxy_gone"
	ReasonServiceRemoved   = "service_removed"
	ReasonNotEntryPoint    = "not_entry_point"
	ReasonForced           = "forced"
	// ReasonEndLost: a node reconnected without one of the session's tunnel ends (it
	// restarted within its grace period and removed its leftovers).
	ReasonEndLost = "end_lost"
	// ReasonSetupFailed is the rollback of a session whose setup failed.
	ReasonSetupFailed = "setup_failed"
	// ReasonShutdown is never sent by the table itself; it documents that sessions are left in
	// place when the server stops (nodes keep their tunnels; a restarted server learns them from
	// the nodes as orphans and adopts them when proxies re-announce their uses, see Adopt).
	ReasonShutdown = "shutdown"
)

// Session is a snapshot of one session.
type Session struct {
	ID string `json:"id"`
	Key
	NetID        uint32        `json:"net_id,omitempty"`
	Replica      Replica       `json:"replica"`
	UpstreamIP   string        `json:"upstream_ip,omitempty"`
	UpstreamPort int           `json:"upstream_port,omitempty"`
	State        State         `json:"state"`
	Created      time.Time     `json:"created"`
	SetupLatency time.Duration `json:"setup_latency"`
	// Uses is the number of open leases (connections, UDP sessions, requests).
	Uses int `json:"uses"`
	// IdleSince is when Uses last dropped to zero (nil while in use).
	IdleSince *time.Time `json:"idle_since,omitempty"`
	// Timeout is the idle timeout; 0 never expires.
	Timeout time.Duration `json:"timeout"`
	// Reason is set once a teardown began.
	Reason string `json:"reason,omitempty"`
}

// Upstream is where the proxy connects for a session.
type Upstream struct {
	IP   string
	Port int
}

// Commander builds and removes both ends of a session's tunnel. Setup returns once both ends
// acknowledged (or with the first error; the Table then calls Teardown to roll back). Teardown
// returns nil once both ends confirmed removal, or the node of an end is gone for good; any
// error makes the Table retry with backoff, and the net id stays out of the pool meanwhile.
type Commander interface {
	Setup(ctx context.Context, s Session) (Upstream, error)
	Teardown(ctx context.Context, s Session, reason string) error
}

// Errors returned by the Table. Callers map them to gRPC and HTTP statuses.
var (
	ErrNoReplica       = errors.New("no healthy replica")
	ErrUnknownLease    = errors.New("unknown lease")
	ErrUnknownSession  = errors.New("unknown session")
	ErrClosed          = errors.New("session table closed")
	ErrTornDownInSetup = errors.New("session was torn down while it was being set up")
)

// Request asks for a session.
type Request struct {
	Key Key
	// Timeout is the service's idle timeout (0 = never expires).
	Timeout time.Duration
	// Candidates are the replicas a new session may use; the least loaded one is picked.
	Candidates []Replica
}

// Result is a successful Acquire: the session and the lease taken for the caller.
type Result struct {
	Session Session
	LeaseID string
	// Reused is true when the session existed (or was being built by another caller).
	Reused bool
}
