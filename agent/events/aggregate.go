package events

import (
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Aggregator is an Emitter that folds events a remote party can trigger at will (a refused
// caller, a flood of clients whose upstream fails) into one event per key and interval, with a
// count, so that an attacker can neither flush the event ring nor flood the log. Events of
// kinds it has no key for pass straight through.
//
// The first event of a key is passed on at once (with count 1). Further events of that key are
// held and counted; at the end of each interval one summary event per key with a non-zero count
// is passed on, carrying the latest event's fields and the count. A key that stays quiet for an
// interval is forgotten. The table is bounded by MaxKeys; events of keys beyond it are counted
// per kind and summarised as one event whose node is empty and whose `aggregated` field says so.
type Aggregator struct {
	next     Emitter
	interval time.Duration
	maxKeys  int
	keys     map[string]func(Event) string

	mu       sync.Mutex
	groups   map[string]*aggGroup // kind + "\x00" + key
	overflow map[string]*aggGroup // by kind
	timer    *time.Timer
	stopped  bool
}

// AggregatorConfig configures an Aggregator.
type AggregatorConfig struct {
	// Next receives what the aggregator passes on.
	Next Emitter
	// Interval is the summary period (default 10 s).
	Interval time.Duration
	// MaxKeys bounds the table of keys (default 1024).
	MaxKeys int
	// Keys maps each aggregated kind to its key function (see RemoteTriggered).
	Keys map[string]func(Event) string
}

type aggGroup struct {
	last Event
	held int // events counted since the last one passed on
}

// Default aggregation settings.
const (
	DefaultAggregateInterval = 10 * time.Second
	DefaultAggregateMaxKeys  = 1024
)

// RemoteTriggered are the kinds a remote party can trigger as often as it likes, with the key
// each is aggregated by: the peer and reason of a refusal, the service and upstream of a failed
// relay (not the client, of which a flood has thousands).
var RemoteTriggered = map[string]func(Event) string{
	AuthRefused:              func(e Event) string { return peerOrNode(e) + "\x00" + e.Fields["reason"] },
	UDPUpstreamConnectFailed: ByFields("service", "upstream"),
	TCPUpstreamConnectFailed: ByFields("service", "upstream"),
	UpstreamLookupFailed:     ByFields("service", "protocol"),
	ACMEOrderFailed:          ByFields("domain", "reason"),
	// Not by server_name: a client may send a new one on every connection.
	TLSConnectionUnrouted: ByFields("port", "reason"),
	// Per reason only: server names are the client's choice, and unbounded.
	TLSHandshakeFailed: ByFields("reason"),
}

// ByFields keys events by their node and the named fields.
func ByFields(names ...string) func(Event) string {
	return func(e Event) string {
		k := e.Node
		for _, n := range names {
			k += "\x00" + e.Fields[n]
		}
		return k
	}
}

func peerOrNode(e Event) string {
	if p := e.Fields["peer"]; p != "" {
		return p
	}
	return e.Node
}

// NewAggregator returns an aggregator passing events on to cfg.Next. Stop flushes it.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultAggregateInterval
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultAggregateMaxKeys
	}
	return &Aggregator{next: cfg.Next, interval: cfg.Interval, maxKeys: cfg.MaxKeys, keys: cfg.Keys,
		groups: map[string]*aggGroup{}, overflow: map[string]*aggGroup{}}
}

// Emit passes e on, or counts it toward its key's next summary. An event that is itself a
// summary (it has a `count` field, from an aggregator upstream) counts for that many.
func (a *Aggregator) Emit(e Event) Event {
	keyOf, ok := a.keys[e.Kind]
	if !ok {
		return a.next.Emit(e)
	}
	n := 1
	if c, err := strconv.Atoi(e.Fields["count"]); err == nil && c > 0 {
		n = c
	}
	k := e.Kind + "\x00" + keyOf(e)
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return a.next.Emit(withCount(e, n, 0))
	}
	if g := a.groups[k]; g != nil {
		g.last, g.held = e, g.held+n
		a.mu.Unlock()
		return e
	}
	if len(a.groups) >= a.maxKeys {
		o := a.overflow[e.Kind]
		if o == nil {
			o = &aggGroup{}
			a.overflow[e.Kind] = o
		}
		o.last, o.held = e, o.held+n
		a.armLocked()
		a.mu.Unlock()
		return e
	}
	a.groups[k] = &aggGroup{}
	a.armLocked()
	a.mu.Unlock()
	return a.next.Emit(withCount(e, n, 0))
}

// armLocked starts the summary timer unless it runs. a.mu is held.
func (a *Aggregator) armLocked() {
	if a.timer == nil && !a.stopped {
		a.timer = time.AfterFunc(a.interval, a.flush)
	}
}

// flush passes on one summary per key with held events and forgets quiet keys.
func (a *Aggregator) flush() {
	a.mu.Lock()
	var out []Event
	per := a.interval
	for k, g := range a.groups {
		if g.held == 0 {
			delete(a.groups, k)
			continue
		}
		out = append(out, withCount(g.last, g.held, per))
		g.held = 0
	}
	for kind, o := range a.overflow {
		e := withCount(o.last, o.held, per)
		e.Node = ""
		e.Fields["aggregated"] = fmt.Sprintf("from keys beyond the first %d", a.maxKeys)
		out = append(out, e)
		delete(a.overflow, kind)
	}
	a.timer = nil
	if len(a.groups) > 0 {
		a.armLocked()
	}
	a.mu.Unlock()
	for _, e := range out {
		a.next.Emit(e)
	}
}

// Stop passes on what is held and lets later events through one by one (with count 1).
func (a *Aggregator) Stop() {
	a.mu.Lock()
	a.stopped = true
	if a.timer != nil {
		a.timer.Stop()
	}
	a.mu.Unlock()
	a.flush()
}

// Keys is the number of keys in the table (for tests and status).
func (a *Aggregator) Keys() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.groups)
}

// withCount copies e with the count field (and, for a summary, the interval it covers).
func withCount(e Event, n int, per time.Duration) Event {
	f := make(map[string]string, len(e.Fields)+2)
	for k, v := range e.Fields {
		f[k] = v
	}
	f["count"] = strconv.Itoa(n)
	e.Fields = f
	e.Index, e.Time = 0, time.Time{}
	if per > 0 {
		f["interval"] = per.String()
		e.Message = fmt.Sprintf("%s (%d times in the last %s)", e.Message, n, per)
	}
	return e
}
