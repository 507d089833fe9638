// Package accesslog writes the HTTP router's access log: one line per request, to the agent's
// log or to a file, through a bounded buffer that never makes a request wait on the disk.
//
// A request hands its Entry to Log, which never blocks: when the buffer is full (the disk or
// the log pipe is slower than the request rate) the entry is dropped and counted; the writer
// goroutine reports drops in one warning per interval. A remote party can therefore cost at
// most the buffer's memory, never a blocked request or an unbounded queue.
package accesslog

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// Entry is one request.
type Entry struct {
	Time     time.Time // when the request started
	Listener string    // "http" or "https"
	Client   string    // ip:port
	Method   string
	Host     string
	URI      string // the request target as the client sent it (path and query)
	Status   int
	Bytes    int64 // response bytes sent to the client (for an upgraded connection, after the 101)
	Duration time.Duration
	Service  string // the service that served it (a route's target, or the Host's service); "" when none
	Upstream string // the replica's overlay address; "" when none was reached
}

// Field limits: a request target may be 8 KiB, a log line should not.
const (
	maxURI   = 1024
	maxField = 256
)

// AppendText appends the entry as one logfmt line (no newline): keys in a fixed order, values
// quoted when they hold a space, a quote, '=' or a non-printable byte, long ones truncated.
func (e *Entry) AppendText(b []byte) []byte {
	b = append(b, "time="...)
	b = e.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = appendKV(b, "listener", e.Listener, maxField)
	b = appendKV(b, "client", e.Client, maxField)
	b = appendKV(b, "method", e.Method, maxField)
	b = appendKV(b, "host", e.Host, maxField)
	b = appendKV(b, "uri", e.URI, maxURI)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, " duration_ms="...)
	b = strconv.AppendFloat(b, float64(e.Duration.Microseconds())/1000, 'f', 3, 64)
	b = appendKV(b, "service", e.Service, maxField)
	b = appendKV(b, "upstream", e.Upstream, maxField)
	return b
}

// KV returns the entry's fields as hclog key/value pairs (the "on" mode).
func (e *Entry) KV() []any {
	return []any{"listener", e.Listener, "client", e.Client, "method", clip(e.Method, maxField),
		"host", clip(e.Host, maxField), "uri", clip(e.URI, maxURI), "status", e.Status, "bytes", e.Bytes,
		"duration_ms", float64(e.Duration.Microseconds()) / 1000, "service", e.Service, "upstream", orDash(e.Upstream)}
}

func appendKV(b []byte, k, v string, limit int) []byte {
	b = append(b, ' ')
	b = append(b, k...)
	b = append(b, '=')
	v = orDash(clip(v, limit))
	if needsQuote(v) {
		return strconv.AppendQuote(b, v)
	}
	return append(b, v...)
}

func orDash(v string) string {
	if v == "" {
		return "-"
	}
	return v
}

// clip truncates v to at most limit bytes on a rune boundary, marking the cut with "...".
func clip(v string, limit int) string {
	if len(v) <= limit {
		return v
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut] + "..."
}

func needsQuote(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f {
			return true
		}
	}
	return false
}

// Config says where lines go.
type Config struct {
	// Path is the file lines are appended to; "" writes them to Logger instead.
	Path string
	// Logger receives the lines when Path is "" (at info, as "request" with the fields), and
	// the writer's own warnings (drops, write errors) in both modes.
	Logger hclog.Logger
	// Buffer is how many entries may wait for the writer (default DefaultBuffer).
	Buffer int
	// OnDrop is called for each dropped entry (a metric); it must not block.
	OnDrop func()
	// ReportEvery is the interval of the drop and write-error warnings (default 10s).
	ReportEvery time.Duration
}

// DefaultBuffer entries wait at most: with URIs clipped to 1 KiB this bounds the buffer to
// a few MiB, and it absorbs a burst of a few thousand requests while the disk stalls.
const DefaultBuffer = 4096

// Log is a running access log. Log and Dropped are safe for concurrent use; Close once.
type Log struct {
	cfg     Config
	file    *os.File
	ch      chan Entry
	done    chan struct{}
	dropped atomic.Uint64
	closeMu sync.RWMutex // Log holds it for reading: Close must not close ch under a sender
	closed  bool
}

// Open starts a log: it opens (creating, appending) the file when Path is set.
func Open(cfg Config) (*Log, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.ReportEvery <= 0 {
		cfg.ReportEvery = 10 * time.Second
	}
	l := &Log{cfg: cfg, ch: make(chan Entry, cfg.Buffer), done: make(chan struct{})}
	if cfg.Path != "" {
		f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("opening access log: %w", err)
		}
		l.file = f
	}
	go l.run()
	return l, nil
}

// Log queues an entry; it never blocks. It reports false when the entry was dropped (buffer
// full, or the log closed).
func (l *Log) Log(e Entry) bool {
	// Clipped before queuing, so that a queued entry never pins a long request target or Host
	// (8 KiB each): the buffer holds at most about DefaultBuffer × 2.5 KiB.
	e.URI = clip(e.URI, maxURI)
	e.Host, e.Method = clip(e.Host, maxField), clip(e.Method, maxField)
	e.Client, e.Service, e.Upstream = clip(e.Client, maxField), clip(e.Service, maxField), clip(e.Upstream, maxField)
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if !l.closed {
		select {
		case l.ch <- e:
			return true
		default:
		}
	}
	l.dropped.Add(1)
	if l.cfg.OnDrop != nil {
		l.cfg.OnDrop()
	}
	return false
}

// Dropped is how many entries were dropped since Open.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Close stops taking entries, writes those queued and closes the file.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return errors.New("access log already closed")
	}
	l.closed = true
	close(l.ch)
	l.closeMu.Unlock()
	<-l.done
	if l.file != nil {
		return l.file.Close()
	}
	return nil
}

// run is the writer: it owns the file and ends when Close closes the channel.
func (l *Log) run() {
	defer close(l.done)
	var w *bufio.Writer
	if l.file != nil {
		w = bufio.NewWriterSize(l.file, 64<<10)
	}
	tick := time.NewTicker(l.cfg.ReportEvery)
	defer tick.Stop()
	var line []byte
	var reported uint64
	var writeErr error
	var writeErrs int
	report := func() {
		if d := l.dropped.Load(); d > reported {
			l.cfg.Logger.Warn("access log lines dropped: the log is slower than the request rate",
				"dropped", d-reported, "total", d)
			reported = d
		}
		if writeErrs > 0 {
			l.cfg.Logger.Error("writing the access log failed", "path", l.cfg.Path, "errors", writeErrs, "error", writeErr)
			writeErrs = 0
		}
	}
	defer report()
	write := func(e *Entry) {
		if w == nil {
			l.cfg.Logger.Info("request", e.KV()...)
			return
		}
		line = append(e.AppendText(line[:0]), '\n')
		if _, err := w.Write(line); err != nil {
			writeErr = err
			writeErrs++
		}
	}
	flush := func() {
		if w != nil {
			if err := w.Flush(); err != nil {
				writeErr = err
				writeErrs++
				w.Reset(l.file) // drop what could not be written rather than retry it forever
			}
		}
	}
	for {
		select {
		case e, ok := <-l.ch:
			if !ok {
				flush()
				return
			}
			write(&e)
			// Write what is queued, then flush once: a burst costs one write(2) per 64 KiB.
			for n := len(l.ch); n > 0; n-- {
				e, ok := <-l.ch
				if !ok {
					break
				}
				write(&e)
			}
			flush()
		case <-tick.C:
			report()
		}
	}
}
