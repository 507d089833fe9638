package agent

import (
	"log"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// newHTTPErrorLog routes net/http's own error lines (TLS handshake failures, accept errors,
// handler panics) through hclog instead of Go's standard log format, at a level that says what
// they are: a handshake that ends in EOF is a client that connected and left without a word (a
// TCP port check, a scanner) and is logged at debug. Remote parties can trigger these lines at
// will, so the warnings are limited to one per errorLogEvery with a count of those held back.
func newHTTPErrorLog(logger hclog.Logger) *log.Logger {
	return log.New(&httpErrorLog{logger: logger, warn: logThrottle{every: errorLogEvery}}, "", 0)
}

const errorLogEvery = 10 * time.Second

type httpErrorLog struct {
	logger hclog.Logger
	warn   logThrottle
}

func (w *httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(msg, "TLS handshake error") && quietHandshakeEnd(msg):
		w.logger.Debug(msg)
	case strings.HasPrefix(msg, "http: panic serving"):
		w.logger.Error(msg) // a bug of ours, never suppressed
	default:
		ok, held := w.warn.allow()
		switch {
		case !ok:
			w.logger.Debug(msg)
		case held > 0:
			w.logger.Warn(msg, "suppressed", held, "per", errorLogEvery.String())
		default:
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
