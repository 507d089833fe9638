package sessionstore

import (
	"context"
	"fmt"
)

// pool is this server's view of the allocated net ids. It only chooses which id to try: Consul's
// create-only write decides. Ids are tried round-robin from a cursor, so a freed id rests as long
// as possible before it names a new tunnel (stale FDB entries on a peer age out). Guarded by
// Store.mu.
type pool struct {
	min, max uint32
	cursor   uint32
	inUse    map[uint32]bool
}

func newPool(min, max uint32) *pool {
	return &pool{min: min, max: max, cursor: min, inUse: map[uint32]bool{}}
}

// alloc marks and returns the next id not known to be in use.
func (p *pool) alloc() (uint32, bool) {
	size := uint64(p.max) - uint64(p.min) + 1
	if uint64(len(p.inUse)) >= size {
		return 0, false
	}
	for range size {
		id := p.cursor
		if p.cursor == p.max {
			p.cursor = p.min
		} else {
			p.cursor++
		}
		if !p.inUse[id] {
			p.inUse[id] = true
			return id, true
		}
	}
	return 0, false
}

func (p *pool) unmark(id uint32) { delete(p.inUse, id) }
func (p *pool) free(id uint32)   { delete(p.inUse, id) }

// mark records an id allocated elsewhere (Load).
func (p *pool) mark(id uint32) {
	if id >= p.min && id <= p.max {
		p.inUse[id] = true
	}
}

// AllocNetID allocates a net id for the session owner and returns it once the allocation is in
// Consul. No other server (or store instance) can allocate the same id until FreeNetID.
func (s *Store) AllocNetID(ctx context.Context, owner string) (uint32, error) {
	if owner == "" {
		return 0, fmt.Errorf("sessionstore: AllocNetID needs the owner session id")
	}
	o := &op{kind: opAlloc, owner: owner}
	if err := s.submit(ctx, o); err != nil {
		return 0, err
	}
	return o.netID, nil
}

// FreeNetID gives an id back (once both tunnel ends confirmed teardown).
func (s *Store) FreeNetID(ctx context.Context, id uint32) error {
	return s.submit(ctx, &op{kind: opFree, netID: id})
}
