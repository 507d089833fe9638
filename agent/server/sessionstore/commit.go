package sessionstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"
)

// commit writes a batch in one transaction. Consul applies a transaction whole or not at all and
// names every operation that failed, so: a net id found taken is retried with another id, an
// operation that failed for another reason fails its caller, and the rest (rolled back with
// them) are sent again. Each round removes an operation or consumes an id, so it ends.
func (s *Store) commit(ctx context.Context, batch []*op) {
	pending := batch
	for len(pending) > 0 {
		pending = s.pickIDs(pending)
		if len(pending) == 0 {
			return
		}
		ops := make(api.TxnOps, 0, len(pending)+1)
		fenced := false
		if s.cfg.Fence != nil {
			key, session := s.cfg.Fence()
			if session == "" {
				// Not leading (any more): an empty session would match a free key.
				for _, o := range pending {
					s.fail(o, fmt.Errorf("sessionstore: %w (no lock session)", ErrNotLeader))
				}
				return
			}
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: key, Session: session}})
			fenced = true
		}
		for _, o := range pending {
			ops = append(ops, s.txnOp(o))
		}
		s.mu.Lock()
		s.stats.Txns++
		s.stats.Ops += uint64(len(ops))
		s.mu.Unlock()

		ok, resp, _, err := s.cfg.Client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			err = classify(err.Error(), err)
			for _, o := range pending {
				s.fail(o, fmt.Errorf("sessionstore: transaction of %d operations: %w", len(ops), err))
			}
			return
		}
		if ok {
			s.mu.Lock()
			for _, o := range pending {
				if o.kind == opFree {
					s.pool.free(o.netID)
				}
				s.stats.Committed++
			}
			s.mu.Unlock()
			for _, o := range pending {
				o.done <- nil
			}
			return
		}
		failed := map[int]string{}
		for _, e := range resp.Errors {
			failed[e.OpIndex] = e.What
		}
		off := 0
		if fenced {
			off = 1
			if what, bad := failed[0]; bad {
				for _, o := range pending {
					s.fail(o, fmt.Errorf("sessionstore: %w (%s)", ErrNotLeader, what))
				}
				return
			}
		}
		next := pending[:0:0]
		for i, o := range pending {
			what, bad := failed[i+off]
			switch {
			case !bad:
				next = append(next, o) // rolled back with the failed ones: send again
			case o.kind == opAlloc && strings.Contains(what, "index is stale"):
				// Someone else holds this id: it stays marked in our view; take another.
				s.mu.Lock()
				s.stats.Conflicts++
				s.mu.Unlock()
				o.netID = 0
				next = append(next, o)
			default:
				s.fail(o, fmt.Errorf("sessionstore: writing %s: %w", s.keyOf(o), classify(what, nil)))
			}
		}
		pending = next
	}
}

// pickIDs gives every allocation without an id a free one; those it cannot serve fail.
func (s *Store) pickIDs(pending []*op) []*op {
	out := pending[:0:0]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range pending {
		if o.kind == opAlloc && o.netID == 0 {
			id, ok := s.pool.alloc()
			if !ok {
				o.done <- fmt.Errorf("sessionstore: %w: all of %d-%d are allocated", ErrPoolExhausted, s.cfg.NetIDMin, s.cfg.NetIDMax)
				continue
			}
			o.netID = id
		}
		out = append(out, o)
	}
	return out
}

func (s *Store) txnOp(o *op) *api.TxnOp {
	switch o.kind {
	case opAlloc:
		// CAS with index 0: create only, fails if any server holds the id.
		return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: s.netIDKey(o.netID), Value: []byte(o.owner), Index: 0}}
	case opFree:
		return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: s.netIDKey(o.netID)}}
	case opDelete:
		return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: o.key}}
	default:
		return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: o.key, Value: o.value}}
	}
}

func (s *Store) keyOf(o *op) string {
	if o.kind == opAlloc || o.kind == opFree {
		return s.netIDKey(o.netID)
	}
	return o.key
}

// fail answers o with err; an allocation gives its tentative id back.
func (s *Store) fail(o *op, err error) {
	if o.kind == opAlloc && o.netID != 0 {
		s.mu.Lock()
		s.pool.unmark(o.netID)
		s.mu.Unlock()
		o.netID = 0
	}
	o.done <- err
}

// classify maps Consul's answers to the store's errors, keeping Consul's text.
func classify(what string, err error) error {
	lower := strings.ToLower(what)
	var base error
	switch {
	case strings.Contains(lower, "permission denied") || strings.Contains(lower, "403") || strings.Contains(lower, "acl not found"):
		base = ErrDenied
	case strings.Contains(lower, "index is stale"):
		base = ErrConflict
	}
	switch {
	case base != nil && err != nil:
		return fmt.Errorf("%w: %w", base, err)
	case base != nil:
		return fmt.Errorf("%w: %s", base, what)
	case err != nil:
		return err
	default:
		return errors.New(what)
	}
}
