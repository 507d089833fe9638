package server

import (
	"context"
	"time"
)

// A service believed to have no instance is read once more before a client is refused for it.
// The belief can be stale: a watched name missing from the names answer is taken as empty
// without a read, and the names and checks watches space their reads (up to 500 ms) so that a
// leader writing thousands of definitions is not slowed. A replica registered a moment before
// its first client must not make that client fail.
const (
	// confirmEvery bounds the extra reads: one per service per second, whatever the number of
	// clients refused for a service that truly has no instance.
	confirmEvery = time.Second
	// confirmTimeout bounds the wait a Proxy call spends on that read.
	confirmTimeout = 2 * time.Second
)

// confirmEmpty re-reads service when the watcher knows no instance of it and has not read it
// within confirmEvery. Calls that arrive during the read wait for it. One read at a time across
// all services (confirmSlot), so that the connections to Consul stay bounded.
func (w *replicaWatcher) confirmEmpty(ctx context.Context, service string) {
	w.mu.Lock()
	s := w.services[service]
	if s == nil || len(s.instances) > 0 {
		w.mu.Unlock()
		return
	}
	if wait := s.confirming; wait != nil {
		w.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
		}
		return
	}
	if time.Since(s.confirmed) < confirmEvery {
		w.mu.Unlock()
		return
	}
	done := make(chan struct{})
	s.confirming, s.confirmed = done, time.Now()
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		s.confirming = nil
		w.mu.Unlock()
		close(done)
	}()

	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	select {
	case w.confirmSlot <- struct{}{}:
		defer func() { <-w.confirmSlot }()
	case <-ctx.Done():
		return
	}
	changed, err := w.fetchService(ctx, service)
	if err != nil {
		w.logger.Debug("reading a service with no known instance again failed", "service", service, "error", err)
		return
	}
	if changed {
		w.onChange(service)
	}
}
