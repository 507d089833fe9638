package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/proxy/accesslog"
	"github.com/nullnet/nullnet/config"
)

// accessLogState is the running access log and the setting it was opened for.
type accessLogState struct {
	setting string
	log     *accesslog.Log // nil when off
}

// openAccessLog opens the log proxy.access_log names ("off", "on" or a file path).
func (p *Proxy) openAccessLog(setting string) (*accessLogState, error) {
	st := &accessLogState{setting: setting}
	if setting == "" || setting == config.AccessLogOff {
		return st, nil
	}
	cfg := accesslog.Config{Logger: p.logger.Named("access"),
		OnDrop: func() { metrics.IncrCounter([]string{"nullnet", "proxy", "http", "access_log_dropped"}, 1) }}
	if setting != config.AccessLogOn {
		cfg.Path = setting
	}
	l, err := accesslog.Open(cfg)
	if err != nil {
		return nil, err
	}
	st.log = l
	return st, nil
}

// reloadAccessLog applies a new proxy.access_log. A file log is reopened even when the path
// is unchanged, so that a reload after logrotate moved the file writes to a new one. When the
// new log cannot be opened the old one keeps running.
func (p *Proxy) reloadAccessLog(setting string) {
	if p.runCtx.Err() != nil {
		return // stopped: nothing writes any more
	}
	old := p.http.access.Load()
	if old != nil && old.setting == setting && (setting == config.AccessLogOff || setting == config.AccessLogOn) {
		return
	}
	next, err := p.openAccessLog(setting)
	if err != nil {
		p.logger.Error("proxy.access_log not applied; the previous access log keeps running", "error", err)
		return
	}
	p.http.access.Store(next)
	if old != nil && old.setting != setting {
		p.logger.Info("proxy.access_log changed", "old", old.setting, "new", setting)
	}
	closeAccessLog(p, old)
}

// closeAccessLog closes a replaced or final log: requests that loaded it just before may
// still hand it an entry, which Log then drops, counted. Close waits for queued lines, so it
// runs beside the caller (a reload must not wait on a slow disk), owned by p.wg.
func closeAccessLog(p *Proxy, st *accessLogState) {
	if st == nil || st.log == nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := st.log.Close(); err != nil {
			p.logger.Warn("closing the access log", "error", err)
		}
	}()
}

// logAccess writes a request's line, when the access log is on. target is the service that
// served it (a route's target, or the Host's), upstream the replica; both are zero when the
// request ended before.
func (r *httpRouter) logAccess(req *http.Request, sw *statusWriter, start time.Time, target string, upstream netip.AddrPort) {
	st := r.access.Load()
	if st == nil || st.log == nil {
		return
	}
	e := accesslog.Entry{Time: start, Listener: "http", Client: req.RemoteAddr, Method: req.Method, Host: req.Host,
		URI: req.RequestURI, Status: sw.code(), Bytes: sw.bytes.Load(), Duration: time.Since(start), Service: target}
	if req.TLS != nil {
		e.Listener = "https"
	}
	if ap, err := netip.ParseAddrPort(req.RemoteAddr); err == nil {
		e.Client = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	if upstream.IsValid() {
		e.Upstream = upstream.String()
	}
	st.log.Log(e)
}

// Hijack hands an upgraded connection (WebSocket) to ReverseProxy, recording the 101 and
// counting the bytes it sends to the client afterwards for the access log.
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack: %w", err)
	}
	if s.status == 0 {
		s.status = http.StatusSwitchingProtocols
	}
	return &countingConn{Conn: c, n: &s.bytes}, brw, nil
}

// countingConn counts the bytes written to the client.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// startAccessLog opens the configured access log when Run starts: a file that cannot be
// opened stops the start, as a taken HTTP port does.
func (p *Proxy) startAccessLog() error {
	st, err := p.openAccessLog(p.cfg.Agent.Proxy.AccessLog)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	closeAccessLog(p, p.http.access.Swap(st)) // one a Reload before Run opened
	return nil
}

// stopAccessLog closes the log once every request has ended (Run, after p.wg.Wait).
func (p *Proxy) stopAccessLog() {
	if st := p.http.access.Swap(nil); st != nil && st.log != nil {
		if err := st.log.Close(); err != nil {
			p.logger.Warn("closing the access log", "error", err)
		}
	}
}
