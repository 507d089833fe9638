package sessionstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/agent/server/session"
)

// End is one tunnel end as the leader last knew it.
type End struct {
	Node string `json:"node"`
	// State: "pending" (setup sent), "up" (acked), "removing" (teardown sent).
	State string `json:"state"`
}

// Record is one live session in KV: the session table's snapshot, both ends, and the idle
// deadline (absolute, so a new leader keeps the same expiry).
type Record struct {
	session.Session
	ProxyEnd     End        `json:"proxy_end"`
	ServiceEnd   End        `json:"service_end"`
	IdleDeadline *time.Time `json:"idle_deadline,omitempty"`
	// Server is the server that wrote the record last.
	Server string `json:"server,omitempty"`
}

// MaxRecordSize bounds one record's JSON (Consul's default kv_max_value_size is 512 KiB; a
// record is a few hundred bytes).
const MaxRecordSize = 16 << 10

// Put writes (creates or replaces) a session's record and returns once it is in Consul.
func (s *Store) Put(ctx context.Context, r Record) error {
	if r.ID == "" || strings.Contains(r.ID, "/") {
		return fmt.Errorf("sessionstore: bad session id %q", r.ID)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("sessionstore: encoding session %s: %w", r.ID, err)
	}
	if len(b) > MaxRecordSize {
		return fmt.Errorf("sessionstore: session %s record is %d bytes (max %d)", r.ID, len(b), MaxRecordSize)
	}
	return s.submit(ctx, &op{kind: opPut, key: s.recordKey(r.ID), value: b})
}

// Delete removes a session's record.
func (s *Store) Delete(ctx context.Context, sessionID string) error {
	return s.submit(ctx, &op{kind: opDelete, key: s.recordKey(sessionID)})
}

// State is everything in the store: what a new leader restores.
type State struct {
	Records []Record
	// NetIDs maps every allocated net id to the session id that allocated it. An id whose owner
	// has no record was allocated by a leader that crashed before writing the record: the new
	// leader frees it once no node reports a tunnel with it.
	NetIDs map[uint32]string
	// Index is the Consul index of the read.
	Index uint64
	// Skipped counts keys under the prefix that could not be decoded (logged, left in place).
	Skipped int
}

// Load reads the whole prefix in one consistent query and makes it this store's view of the
// pool (so the next allocation does not retry ids Consul already holds). A new leader calls it
// in establish, before it writes anything.
func (s *Store) Load(ctx context.Context) (State, error) {
	pairs, meta, err := s.cfg.Client.KV().List(s.cfg.Prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return State{}, fmt.Errorf("sessionstore: reading %s: %w", s.cfg.Prefix, classify(err.Error(), err))
	}
	st := State{NetIDs: map[uint32]string{}, Index: meta.LastIndex}
	for _, p := range pairs {
		rest := strings.TrimPrefix(p.Key, s.cfg.Prefix)
		switch {
		case strings.HasPrefix(rest, "records/"):
			var r Record
			if err := json.Unmarshal(p.Value, &r); err != nil || r.ID == "" {
				s.logger.Warn("skipping an undecodable session record", "key", p.Key, "error", err)
				st.Skipped++
				continue
			}
			st.Records = append(st.Records, r)
		case strings.HasPrefix(rest, "netids/"):
			id, err := strconv.ParseUint(strings.TrimPrefix(rest, "netids/"), 10, 32)
			if err != nil {
				s.logger.Warn("skipping a bad net id key", "key", p.Key)
				st.Skipped++
				continue
			}
			st.NetIDs[uint32(id)] = string(p.Value)
		default:
			st.Skipped++
		}
	}
	s.mu.Lock()
	s.pool = newPool(s.cfg.NetIDMin, s.cfg.NetIDMax)
	var highest uint32
	for id := range st.NetIDs {
		s.pool.mark(id)
		highest = max(highest, id)
	}
	if highest >= s.cfg.NetIDMin && highest < s.cfg.NetIDMax {
		s.pool.cursor = highest + 1 // keep resting freed ids, as the old leader did
	}
	s.mu.Unlock()
	return st, nil
}
