package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nullnet/nullnet/agent/server/session"
	pb "github.com/nullnet/nullnet/proto"
)

// Orphans are tunnel ends that reconnecting nodes report but no session holds: after a server
// restart (sessions live in memory) every live tunnel is one. Their net ids stay reserved in
// the session table and they are kept for server.orphan_grace, so that a proxy still relaying
// over one can adopt it (ingress_adopt.go); only then are they removed as stale.

// orphanEnd is one reported end of an orphaned net id.
type orphanEnd struct {
	node string
	side pb.OverlaySide
}

type orphan struct {
	ends     map[orphanEnd]bool
	deadline time.Time
	timer    *time.Timer
}

// orphanSet is owned by the plane; expire runs on the plane's wait group.
type orphanSet struct {
	mu      sync.Mutex
	m       map[uint32]*orphan
	changed chan struct{} // closed and replaced whenever an end is added
	closed  bool
}

func newOrphanSet() *orphanSet {
	return &orphanSet{m: map[uint32]*orphan{}, changed: make(chan struct{})}
}

// notifyLocked wakes adoptions waiting for ends to be reported.
func (o *orphanSet) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// close stops the timers: orphans are left in place when the server stops.
func (o *orphanSet) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	for _, or := range o.m {
		or.timer.Stop()
	}
}

// lookup returns the node of each side of an orphan and a channel closed at the next change.
func (o *orphanSet) lookup(id uint32) (proxyNode, serviceNode string, ok bool, changed <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	or := o.m[id]
	if or != nil {
		ok = true
		for e := range or.ends {
			switch e.side {
			case pb.OverlaySide_OVERLAY_SIDE_PROXY:
				proxyNode = e.node
			case pb.OverlaySide_OVERLAY_SIDE_SERVICE:
				serviceNode = e.node
			}
		}
	}
	return proxyNode, serviceNode, ok, o.changed
}

// claim takes an orphan out of the set (its timer stopped) for adoption; restore puts it back.
func (o *orphanSet) claim(id uint32) (*orphan, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	or := o.m[id]
	if or == nil {
		return nil, false
	}
	if !or.timer.Stop() {
		return nil, false // expiring right now
	}
	delete(o.m, id)
	return or, true
}

// restore puts back an orphan whose adoption failed, with its original deadline.
func (p *plane) restoreOrphan(id uint32, or *orphan) {
	o := p.orphans
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	or.timer = time.AfterFunc(max(time.Until(or.deadline), 0), func() { p.expireOrphan(id, or) })
	o.m[id] = or
	o.notifyLocked()
}

// noteOrphans records the ends a (re)connecting node reports that no session holds: an id
// that is free is reserved and becomes an orphan, an orphan gains the end. Ends this node
// had in an orphan and no longer reports are forgotten (an orphan without ends gives its id
// back). An end whose id a session holds (holders, read just before) without this node on
// that side is stale and removed at once, the id left to its session: it is what a node
// brings back after it was declared gone and its freed id went to a session between other
// hosts. It returns how many ids the node reported as orphans.
func (p *plane) noteOrphans(node string, reported map[uint32][]pb.OverlaySide, holders map[uint32]session.Session) int {
	o := p.orphans
	grace := p.s.agentConfig().Server.OrphanGrace
	// Orphans wait for proxies that re-announce their uses after a server restart; a server that
	// has run longer than the grace restarted nobody's sessions, so an end it does not know is
	// stale (its session ended while the node was away, or the node's agent restarted after it
	// ended) and is removed at once.
	if time.Since(p.started) >= grace {
		grace = 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0
	}
	for id, or := range o.m {
		for e := range or.ends {
			if e.node == node && !hasSide(reported[id], e.side) {
				delete(or.ends, e)
			}
		}
		if len(or.ends) == 0 && or.timer.Stop() {
			delete(o.m, id)
			p.table.ReleaseNetID(id)
		}
	}
	n := 0
	stale := map[uint32][]orphanEnd{}
	for id, sides := range reported {
		or := o.m[id]
		if or == nil {
			// Held by a session (its business, if the end is that session's), or by a
			// removal in flight.
			if !p.table.ReserveNetID(id) {
				if s, held := holders[id]; held {
					for _, side := range sides {
						if !sessionEndOn(s, node, side) {
							stale[id] = append(stale[id], orphanEnd{node: node, side: side})
						}
					}
				}
				continue
			}
			or = &orphan{ends: map[orphanEnd]bool{}, deadline: time.Now().Add(grace)}
			or.timer = time.AfterFunc(grace, func() { p.expireOrphan(id, or) })
			o.m[id] = or
		}
		for _, side := range sides {
			or.ends[orphanEnd{node: node, side: side}] = true
		}
		n++
	}
	o.notifyLocked()
	if len(stale) > 0 {
		// The id's next owner cannot be this node's end meanwhile: the session holds the id,
		// and a freed id is reused oldest first, long after this command was sent.
		p.wg.Add(1) // under o.mu, as in expireOrphan
		go func() {
			defer p.wg.Done()
			for id, ends := range stale {
				p.logger.Info("a reconnecting node reported an end of a net id another session holds; removing it",
					"node", node, "net_id", id)
				p.removeEnds(id, ends)
			}
		}()
	}
	return n
}

// sessionEndOn reports whether s has its end of that side on node.
func sessionEndOn(s session.Session, node string, side pb.OverlaySide) bool {
	switch side {
	case pb.OverlaySide_OVERLAY_SIDE_SERVICE:
		return s.Replica.Node == node
	case pb.OverlaySide_OVERLAY_SIDE_PROXY:
		return s.ProxyNode == node
	}
	return false
}

func hasSide(sides []pb.OverlaySide, s pb.OverlaySide) bool {
	for _, x := range sides {
		if x == s {
			return true
		}
	}
	return false
}

// expireOrphan removes the ends of an orphan nobody adopted within server.orphan_grace
// (reason "stale") and then gives its id back.
func (p *plane) expireOrphan(id uint32, or *orphan) {
	o := p.orphans
	o.mu.Lock()
	if o.closed || o.m[id] != or {
		o.mu.Unlock()
		return
	}
	delete(o.m, id)
	ends := make([]orphanEnd, 0, len(or.ends))
	for e := range or.ends {
		ends = append(ends, e)
	}
	p.wg.Add(1) // under o.mu: close (which runs before p.wg.Wait) cannot have happened yet
	o.mu.Unlock()
	p.logger.Info("orphaned tunnel ends were not adopted in time; removing them", "net_id", id, "ends", len(ends))
	go func() {
		defer p.wg.Done()
		p.removeStaleEnds(id, ends)
	}()
}

// removeStaleEnds tears down ends no session holds, then gives the id back either way: should
// an end survive a failed teardown, a later setup of that id on its node replaces it (overlay
// setup is idempotent).
func (p *plane) removeStaleEnds(id uint32, ends []orphanEnd) {
	defer p.table.ReleaseNetID(id)
	p.removeEnds(id, ends)
}

// removeEnds tells each end's node to remove it (reason "stale"); failures are logged.
func (p *plane) removeEnds(id uint32, ends []orphanEnd) {
	ctx, cancel := context.WithTimeout(p.ctx, max(p.s.agentConfig().Server.SetupTimeout, teardownTimeout))
	defer cancel()
	for _, e := range ends {
		ack, err := p.nodes.command(ctx, e.node, func(cid string) *pb.ServerMessage {
			return &pb.ServerMessage{Msg: &pb.ServerMessage_OverlayTeardown{OverlayTeardown: &pb.OverlayTeardown{
				CommandId: cid, NetId: id, Side: e.side, Reason: "stale"}}}
		})
		if err == nil && ack.Error != "" {
			err = errors.New(ack.Error)
		}
		if err != nil {
			p.logger.Warn("removing a stale tunnel end failed", "node", e.node, "net_id", id, "error", err)
		}
	}
}
