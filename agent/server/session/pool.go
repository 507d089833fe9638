package session

import "fmt"

// ErrPoolExhausted is returned when every net id is in use or waiting for a teardown ack.
var ErrPoolExhausted = fmt.Errorf("net id pool exhausted")

// pool hands out net ids in [min, max]. Never-used ids are handed out first (in order); after
// that, freed ids are reused oldest-freed first, so an id rests as long as possible before it
// names a new tunnel (stale FDB/ARP entries on a peer that missed a teardown age out). An id is
// only given back by the table once both ends confirmed teardown (or a node is gone).
// Not safe for concurrent use: the Table's lock guards it.
type pool struct {
	min, max uint32
	next     uint64 // next never-used id (uint64 so max = MaxUint32 cannot wrap)
	freed    []uint32
	inUse    map[uint32]bool
}

func newPool(min, max uint32) *pool {
	return &pool{min: min, max: max, next: uint64(min), inUse: map[uint32]bool{}}
}

func (p *pool) alloc() (uint32, error) {
	for {
		var id uint32
		switch {
		case p.next <= uint64(p.max):
			id = uint32(p.next)
			p.next++
		case len(p.freed) > 0:
			id = p.freed[0]
			p.freed[0] = 0
			p.freed = p.freed[1:]
		default:
			return 0, fmt.Errorf("%w: all %d ids (%d-%d) are in use or awaiting a teardown ack",
				ErrPoolExhausted, uint64(p.max)-uint64(p.min)+1, p.min, p.max)
		}
		if p.inUse[id] {
			continue // reserved out of order (see reserve); free puts it back later
		}
		p.inUse[id] = true
		return id, nil
	}
}

// reserve takes a specific id out of circulation (a stale tunnel end a node still has) and
// reports whether it was free.
func (p *pool) reserve(id uint32) bool {
	if id < p.min || id > p.max || p.inUse[id] {
		return false
	}
	p.inUse[id] = true
	return true
}

func (p *pool) free(id uint32) {
	if !p.inUse[id] {
		return
	}
	delete(p.inUse, id)
	p.freed = append(p.freed, id)
}

func (p *pool) used() int { return len(p.inUse) }
