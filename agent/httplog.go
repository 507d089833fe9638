package agent

import (
	"log"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// newHTTPErrorLog routes net/http's own error lines (TLS handshake failures, accept errors,
// handler panics) through hclog instead of Go's standard log format, at a level that says what
// they are: a handshake that ends in EOF is a client that connected and left without a word (a
// TCP port check, a scanner) and is logged at debug. Remote parties can trigger these lines at
// will, so the warnings are limited to one per errorLogEvery with a count of those held back.
func newHTTPErrorLog(logger hclog.Logger) *log.Logger {
	return log.New(&httpErrorLog{logger: logger}, "", 0)
}

const errorLogEvery = 10 * time.Second

type httpErrorLog struct {
	logger hclog.Logger

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (w *httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(msg, "TLS handshake error") && quietHandshakeEnd(msg):
		w.logger.Debug(msg)
	case strings.HasPrefix(msg, "http: panic serving"):
		w.logger.Error(msg) // a bug of ours, never suppressed
	default:
		w.mu.Lock()
		now := time.Now()
		if now.Sub(w.last) < errorLogEvery {
			w.suppressed++
			w.mu.Unlock()
			w.logger.Debug(msg)
			return len(p), nil
		}
		n := w.suppressed
		w.last, w.suppressed = now, 0
		w.mu.Unlock()
		if n > 0 {
			w.logger.Warn(msg, "suppressed", n, "per", errorLogEvery.String())
		} else {
			w.logger.Warn(msg)
		}
	}
	return len(p), nil
}

// quietHandshakeEnd: the peer closed before or during the handshake.
func quietHandshakeEnd(msg string) bool {
	return strings.HasSuffix(msg, ": EOF") || strings.HasSuffix(msg, "connection reset by peer") ||
		strings.HasSuffix(msg, "i/o timeout")
}
