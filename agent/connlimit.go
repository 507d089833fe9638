package agent

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// limitListener caps the HTTP API's concurrent connections per client IP and in total, as
// Consul's http_max_conns_per_client does. Every accepted connection holds a file descriptor the
// data plane also needs, so a client past its share is answered and closed at accept, before
// net/http spends a goroutine and buffers on it.
type limitListener struct {
	net.Listener
	perClient int
	total     int
	// plain says the listener speaks plain HTTP, so a refusal can be a 429/503 answer; over TLS
	// the connection is only closed (a plaintext answer would be garbage to a TLS client).
	plain  bool
	logger hclog.Logger

	mu   sync.Mutex
	byIP map[netip.Addr]int
	open int

	logs logThrottle
}

// refusalLogEvery bounds the log lines refusals produce, however fast a client retries.
const refusalLogEvery = 10 * time.Second

func newLimitListener(ln net.Listener, perClient, total int, plain bool, logger hclog.Logger) *limitListener {
	return &limitListener{Listener: ln, perClient: perClient, total: total, plain: plain,
		logger: logger, byIP: map[netip.Addr]int{}, logs: logThrottle{every: refusalLogEvery}}
}

// Accept returns the next connection within the limits; connections past them are refused here
// and never reach the caller.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if status, why := l.acquire(ip); status != 0 {
			l.refuse(c, ip, status, why)
			continue
		}
		return &limitedConn{Conn: c, l: l, ip: ip}, nil
	}
}

// acquire counts a new connection from ip; a non-zero status says which limit refused it.
func (l *limitListener) acquire(ip netip.Addr) (status int, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.total {
		return 503, "the agent's HTTP API connection limit (limits.http_max_conns) is reached"
	}
	if l.byIP[ip] >= l.perClient {
		return 429, "too many concurrent connections from this address (limits.http_max_conns_per_client)"
	}
	l.open++
	l.byIP[ip]++
	return 0, ""
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip) // the map holds only addresses with open connections
	}
}

// Counts returns the open connections in total and from ip.
func (l *limitListener) Counts(ip netip.Addr) (total, fromIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.byIP[ip]
}

func (l *limitListener) refuse(c net.Conn, ip netip.Addr, status int, why string) {
	if l.plain {
		body := `{"error":"` + why + `"}` + "\n"
		text := "Too Many Requests"
		if status == 503 {
			text = "Service Unavailable"
		}
		// The answer fits any socket buffer; the deadline only guards a peer with a zero window.
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		_, _ = c.Write([]byte("HTTP/1.1 " + strconv.Itoa(status) + " " + text + "\r\nContent-Type: application/json\r\n" +
			"Connection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	}
	_ = c.Close()

	if ok, held := l.logs.allow(); ok {
		l.logger.Warn("HTTP API connection refused", "client", ip.String(), "reason", why,
			"refused_before", held, "per", refusalLogEvery.String())
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedConn gives its slot back once, however often it is closed.
type limitedConn struct {
	net.Conn
	l    *limitListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
