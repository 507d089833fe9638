package session

import (
	"errors"
	"fmt"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// ErrSessionExists is returned by Adopt when the key already has a session: the caller then
// takes a use of that one (Acquire) instead.
var ErrSessionExists = errors.New("a session exists for this key")

// AdoptRequest asks the table to take over a tunnel that exists already: after a server
// restart the nodes report their ends and a proxy reports that it still relays over one.
type AdoptRequest struct {
	Key Key
	// Timeout is the service's idle timeout (0 = never expires).
	Timeout time.Duration
	Replica Replica
	// NetID must be reserved with ReserveNetID (vxlan); the session owns it from now on and
	// its teardown frees it. 0 without net ids.
	NetID    uint32
	Upstream Upstream
}

// Adopt creates an Active session for req without calling the Commander (the tunnel is
// there already) and opens one use of it, exactly as Acquire does for a new session.
func (t *Table) Adopt(req AdoptRequest) (Result, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return Result{}, ErrClosed
	}
	if t.byKey[req.Key] != nil {
		t.mu.Unlock()
		return Result{}, ErrSessionExists
	}
	if t.cfg.NetIDs && !t.pool.inUse[req.NetID] {
		t.mu.Unlock()
		return Result{}, fmt.Errorf("net id %d is not reserved: only a reserved (orphan) id can be adopted", req.NetID)
	}
	if !t.cfg.NetIDs {
		req.NetID = 0
	}
	e := &entry{ready: make(chan struct{}), leases: map[string]bool{}}
	close(e.ready)
	e.s = Session{ID: newID(), Key: req.Key, NetID: req.NetID, Replica: req.Replica, State: StateActive,
		Created: time.Now(), Timeout: req.Timeout, UpstreamIP: req.Upstream.IP, UpstreamPort: req.Upstream.Port}
	t.byKey[req.Key] = e
	t.byID[e.s.ID] = e
	t.load[req.Replica.ID]++
	leaseID := t.addLeaseLocked(e)
	t.gaugesLocked()
	snap := e.snapshot()
	t.mu.Unlock()
	if !t.cfg.MetricsDisabled {
		metrics.IncrCounterWithLabels([]string{"nullnet", "session", "setups"}, 1,
			[]metrics.Label{{Name: "result", Value: "adopted"}})
	}
	if t.cfg.Hooks.Adopted != nil {
		t.cfg.Hooks.Adopted(snap)
	}
	return Result{Session: snap, LeaseID: leaseID, Reused: true}, nil
}

// Lookup returns the session (being created or active) of a key.
func (t *Table) Lookup(k Key) (Session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byKey[k]
	if e == nil {
		return Session{}, false
	}
	return e.snapshot(), true
}
