package agent

import (
	"sync"
	"time"
)

// logThrottle lets one log line through per period and counts the ones it holds back, for
// lines a remote party can trigger at will (refused connections, failed handshakes).
type logThrottle struct {
	every time.Duration

	mu   sync.Mutex
	last time.Time
	held int
}

// allow reports whether a line may be logged now and, if so, how many were held back since
// the last one.
func (t *logThrottle) allow() (ok bool, held int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		t.held++
		return false, 0
	}
	held, t.held, t.last = t.held, 0, now
	return true, held
}
