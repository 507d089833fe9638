// Package events keeps nullnet's structured events in a bounded in-memory ring and lets readers
// block until something newer than an index arrives, like Consul's blocking queries.
package events

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
)

// Severity of an event.
type Severity string

const (
	Info    Severity = "info"
	Warning Severity = "warning"
	Error   Severity = "error"
)

// Event is one state change or failure.
type Event struct {
	Index    uint64            `json:"index"`
	Time     time.Time         `json:"time"`
	Kind     string            `json:"kind"`
	Severity Severity          `json:"severity"`
	Node     string            `json:"node,omitempty"`
	Message  string            `json:"message,omitempty"`
	Fields   map[string]string `json:"fields,omitempty"`
}

// Store is a bounded ring of events. The zero value is not usable; call New.
type Store struct {
	mu     sync.Mutex
	ring   []Event
	next   int // position of the next write
	full   bool
	index  uint64
	notify chan struct{} // closed and replaced on every append
	logger hclog.Logger
}

// New returns a store that keeps the last size events.
func New(size int, logger hclog.Logger) *Store {
	if size < 1 {
		size = 1
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Store{ring: make([]Event, size), notify: make(chan struct{}), logger: logger.Named("events")}
}

// Emit records an event, logs it and counts it. It never blocks on readers.
func (s *Store) Emit(e Event) Event {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Severity == "" {
		e.Severity = Info
	}
	s.mu.Lock()
	s.index++
	e.Index = s.index
	s.ring[s.next] = e
	s.next = (s.next + 1) % len(s.ring)
	if s.next == 0 {
		s.full = true
	}
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()

	args := []any{"kind", e.Kind, "index", e.Index}
	if e.Node != "" {
		args = append(args, "node", e.Node)
	}
	for k, v := range e.Fields {
		args = append(args, k, v)
	}
	msg := "event"
	if e.Message != "" {
		msg = "event: " + e.Message
	}
	switch e.Severity {
	case Error:
		s.logger.Error(msg, args...)
	case Warning:
		s.logger.Warn(msg, args...)
	default:
		s.logger.Info(msg, args...)
	}
	metrics.IncrCounterWithLabels([]string{"nullnet", "events"}, 1,
		[]metrics.Label{{Name: "kind", Value: e.Kind}, {Name: "severity", Value: string(e.Severity)}})
	return e
}

// Index is the index of the newest event (0 when none).
func (s *Store) Index() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

// Since returns the events with an index above after, oldest first, and the current index.
func (s *Store) Since(after uint64) ([]Event, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sinceLocked(after), s.index
}

func (s *Store) sinceLocked(after uint64) []Event {
	var out []Event
	n := s.next
	if s.full {
		n = len(s.ring)
	}
	start := 0
	if s.full {
		start = s.next
	}
	for i := 0; i < n; i++ {
		e := s.ring[(start+i)%len(s.ring)]
		if e.Index > after {
			out = append(out, e)
		}
	}
	return out
}

// Wait blocks until an event newer than after exists, ctx ends or wait passes, then returns
// what Since would.
func (s *Store) Wait(ctx context.Context, after uint64, wait time.Duration) ([]Event, uint64) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.index > after {
			evs := s.sinceLocked(after)
			idx := s.index
			s.mu.Unlock()
			return evs, idx
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Since(after)
		case <-timer.C:
			return s.Since(after)
		}
	}
}

// Emitter is what components that produce events depend on: the server's Store, or a Reporter
// that forwards an agent's events to a server.
type Emitter interface {
	Emit(Event) Event
}
