// Package sessionstore keeps the session plane's state in Consul KV, so that a new leader can take
// over every live session and the net-id pool (issue 19). It is the one owner of the KV layout
// under its prefix (default "nullnet/sessions/"): no caller builds keys.
//
//	<prefix>records/<session id>  one JSON Record per live session
//	<prefix>netids/<net id>       one key per allocated net id; the value is the owner session id
//
// Net ids are allocated by creating their key with check-and-set index 0 ("create only"), so two
// servers can never hold the same id, whatever they believe locally: the loser of a race sees a
// CAS failure and takes the next id. Every write is fenced, when Fence is set, by a
// check-session operation on the leader lock in the same transaction: a deposed leader's writes
// fail atomically instead of landing after a new leader loaded the state.
//
// Writes are batched: one writer sends one transaction at a time, at most one per MaxWait unless
// it is full (MaxOps operations); each caller blocks until its own operation committed, so a
// tunnel is only acknowledged after its state is in Consul. Each transaction is one Raft apply,
// so the leader's Consul write rate is at most 1/MaxWait + (operations/s)/MaxOps transactions
// per second: with the defaults (10 ms, 64) and 1,000 new sessions/s (2 operations each), at most
// 100 + 32 = 132 transactions/s, against 2,000 without batching.
//
// Foundation; not yet wired into the server (see website/docs/ha.md).
package sessionstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
)

// Defaults.
const (
	DefaultPrefix  = "nullnet/sessions/"
	DefaultMaxOps  = 64
	DefaultMaxWait = 10 * time.Millisecond
	// MaxTxnOps is the most operations one Consul transaction takes (Consul 1.16: 128); the store
	// keeps to half of it.
	MaxTxnOps = 128
)

// Errors.
var (
	// ErrDenied: Consul's ACLs refused a write (the token lacks key_prefix write on the prefix).
	ErrDenied = errors.New("consul refused the write (ACL)")
	// ErrNotLeader: the fence failed; this server no longer holds the leader lock.
	ErrNotLeader = errors.New("not the leader: the lock is no longer held by this server's session")
	// ErrConflict: a record was changed by someone else (check-and-set failed).
	ErrConflict = errors.New("check-and-set conflict")
	// ErrPoolExhausted: every net id in [NetIDMin, NetIDMax] is allocated.
	ErrPoolExhausted = errors.New("net id pool exhausted")
	// ErrClosed: the store's writer has stopped.
	ErrClosed = errors.New("session store closed")
)

// Config configures a Store.
type Config struct {
	Client *api.Client
	Logger hclog.Logger
	// Prefix of every key (default DefaultPrefix); must end with "/".
	Prefix string
	// NetIDMin and NetIDMax bound the net-id pool (inclusive; required).
	NetIDMin, NetIDMax uint32
	// MaxOps (default 64, at most MaxTxnOps-1) and MaxWait (default 10 ms) bound a batch.
	MaxOps  int
	MaxWait time.Duration
	// Fence, when set, returns the leader lock's key and this server's lock session; every
	// transaction then starts with a check-session on it.
	Fence func() (key, session string)
	// QueueSize bounds the operations waiting for the writer (default 4096); callers block
	// beyond it, so a slow Consul slows allocation instead of growing memory.
	QueueSize int
}

// Stats count the writer's work.
type Stats struct {
	Txns      uint64 // transactions sent (also failed ones)
	Ops       uint64 // KV operations sent in them (fence ops included)
	Committed uint64 // caller operations committed
	Conflicts uint64 // net ids found taken by someone else (CAS failures)
}

// Store is the KV-backed session state. Build with New, run Run in a goroutine.
type Store struct {
	cfg    Config
	logger hclog.Logger
	in     chan *op
	done   chan struct{} // closed when Run returns

	mu    sync.Mutex
	pool  *pool
	stats Stats
}

// New checks the config.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("sessionstore: Client is required")
	}
	if cfg.NetIDMin == 0 || cfg.NetIDMax < cfg.NetIDMin {
		return nil, fmt.Errorf("sessionstore: bad net id range %d-%d", cfg.NetIDMin, cfg.NetIDMax)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("sessionstore: Prefix %q must end with /", cfg.Prefix)
	}
	if cfg.MaxOps == 0 {
		cfg.MaxOps = DefaultMaxOps
	}
	if cfg.MaxOps < 1 || cfg.MaxOps > MaxTxnOps-1 {
		return nil, fmt.Errorf("sessionstore: MaxOps %d out of 1-%d", cfg.MaxOps, MaxTxnOps-1)
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Store{cfg: cfg, logger: cfg.Logger, in: make(chan *op, cfg.QueueSize), done: make(chan struct{}),
		pool: newPool(cfg.NetIDMin, cfg.NetIDMax)}, nil
}

// Stats returns the counters so far.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Store) recordKey(id string) string { return s.cfg.Prefix + "records/" + id }
func (s *Store) netIDKey(id uint32) string {
	return s.cfg.Prefix + "netids/" + strconv.FormatUint(uint64(id), 10)
}

type opKind int

const (
	opPut opKind = iota
	opDelete
	opAlloc
	opFree
)

// op is one caller operation; the writer answers on done (capacity 1).
type op struct {
	kind  opKind
	key   string
	value []byte
	owner string // opAlloc: the session id stored as the value
	netID uint32 // opAlloc: picked by the writer; opFree: the id
	done  chan error
}

// submit queues o and waits for its commit.
func (s *Store) submit(ctx context.Context, o *op) error {
	o.done = make(chan error, 1)
	select {
	case s.in <- o:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		// The writer still commits or fails it; the caller only stops waiting. An allocation
		// committed after this is a leaked id that Load reports with its owner.
		return ctx.Err()
	}
}

// Run is the writer: it batches queued operations into transactions until ctx ends; operations
// still queued then fail with ErrClosed.
func (s *Store) Run(ctx context.Context) {
	defer func() {
		close(s.done)
		for {
			select {
			case o := <-s.in:
				o.done <- ErrClosed
			default:
				return
			}
		}
	}()
	batch := make([]*op, 0, s.cfg.MaxOps)
	var lastSent time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-s.in:
			batch = append(batch[:0], o)
		}
		// Pace: at most one transaction per MaxWait unless batches are full. After a quiet
		// spell the wait is zero, so a lone operation is not delayed; under churn operations
		// gather while the window runs.
		timer := time.NewTimer(max(s.cfg.MaxWait-time.Since(lastSent), 0))
	collect:
		for len(batch) < s.cfg.MaxOps {
			select {
			case o := <-s.in:
				batch = append(batch, o)
			case <-timer.C:
				// Take what is already queued, then send.
				for len(batch) < s.cfg.MaxOps {
					select {
					case o := <-s.in:
						batch = append(batch, o)
					default:
						break collect
					}
				}
			case <-ctx.Done():
				break collect
			}
		}
		timer.Stop()
		lastSent = time.Now()
		s.commit(ctx, batch)
	}
}
