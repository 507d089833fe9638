package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// outside runs a real client program in the outside namespace.
func outside(argv ...string) (string, error) {
	return nsRun(30*time.Second, hostOut.ns, argv...)
}

// dialFromOutside opens a TCP connection from the outside namespace: the socket is created on a
// thread switched into that namespace and keeps belonging to it. The thread is never handed back
// to the scheduler (the goroutine exits locked), so no other goroutine runs in the wrong
// namespace.
func dialFromOutside(addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromName(hostOut.ns)
		if err != nil {
			ch <- result{nil, fmt.Errorf("namespace %s: %w", hostOut.ns, err)}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			ch <- result{nil, fmt.Errorf("entering %s: %w", hostOut.ns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// redisConn is a minimal RESP client over a connection made from outside: enough to send
// inline commands on a connection the test keeps open.
type redisConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRedis(addr string) (*redisConn, error) {
	c, err := dialFromOutside(addr)
	if err != nil {
		return nil, err
	}
	return &redisConn{c: c, r: bufio.NewReader(c)}, nil
}

// dialRedisFromRoot connects from the root namespace (client address rootAddr): a second,
// distinct client for the server's sessions and replica choice.
func dialRedisFromRoot(addr string) (*redisConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &redisConn{c: c, r: bufio.NewReader(c)}, nil
}

// do sends one inline command and returns the reply as text (bulk strings unwrapped).
func (rc *redisConn) do(cmd string) (string, error) {
	_ = rc.c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := rc.c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", fmt.Errorf("redis %q: write: %w", cmd, err)
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("redis %q: read: %w", cmd, err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("redis %q: empty reply", cmd)
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis %q: %s", cmd, line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(rc.r, buf); err != nil {
			return "", fmt.Errorf("redis %q: read bulk: %w", cmd, err)
		}
		return string(buf[:n]), nil
	}
	return line, nil
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (rc *redisConn) Close() error { return rc.c.Close() }

// redisCLI runs redis-cli from outside against the proxy.
func redisCLI(port int, args ...string) (string, error) {
	argv := append([]string{"redis-cli", "-h", hostEdge.ip, "-p", strconv.Itoa(port)}, args...)
	out, err := outside(argv...)
	out = strings.TrimSpace(out)
	if err == nil && (strings.HasPrefix(out, "ERR") || strings.Contains(out, "Could not connect")) {
		return out, fmt.Errorf("redis-cli %v: %s", args, out)
	}
	return out, err
}

// apiEvents returns the server's events as generic objects (the ring, oldest first).
func apiEvents() ([]map[string]any, error) {
	var raw json.RawMessage
	if err := getJSON(apiURL(hostCtl, "/v1/events"), &raw); err != nil {
		return nil, err
	}
	var list []map[string]any
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var wrapped struct {
		Events []map[string]any `json:"events"`
	}
	if err := json.Unmarshal(raw, &wrapped); err != nil {
		return nil, fmt.Errorf("/v1/events: unexpected shape %s", truncate(string(raw), 300))
	}
	return wrapped.Events, nil
}

// findEvent returns the first event of kind whose JSON contains every needle.
func findEvent(events []map[string]any, kind string, needles ...string) (string, bool) {
next:
	for _, e := range events {
		if e["kind"] != kind {
			continue
		}
		b, _ := json.Marshal(e)
		for _, n := range needles {
			if !strings.Contains(string(b), n) {
				continue next
			}
		}
		return string(b), true
	}
	return "", false
}

// rawAPI returns a route's body as text, for comparisons and failure output.
func rawAPI(h *host, path string) string {
	var raw json.RawMessage
	if err := getJSON(apiURL(h, path), &raw); err != nil {
		return "(" + err.Error() + ")"
	}
	return string(raw)
}
