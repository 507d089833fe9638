// Package devdemo is what `nullnet agent -dev` serves so that the demo stacks have something to
// relay to: the demo stack files (embedded, so -dev runs from any directory) and one replica of
// each demo service — a TCP echo, a UDP echo and an HTTP page — on loopback ports, which the dev
// agent registers in Consul as host services of its own client role.
//
// The backends are for trying nullnet on one machine, not for production: each is bounded
// (connections, idle time, request size) so that a stray client cannot exhaust the agent.
package devdemo

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/config"
)

//go:embed stacks/*.hcl
var stacksFS embed.FS

// Stack and service names of the embedded demo stacks (stacks/demo.hcl).
const (
	Stack      = "demo"
	TCPService = "echo.tcp"
	UDPService = "echo.udp"
	WebService = "web.localhost"
)

// Limits of the demo backends.
const (
	maxTCPConns = 64
	idleTimeout = 2 * time.Minute
)

// WriteStacks copies the embedded demo stack files into dir (created if missing).
func WriteStacks(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("demo stacks directory: %w", err)
	}
	return fs.WalkDir(stacksFS, "stacks", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := stacksFS.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, d.Name()), b, 0o644); err != nil {
			return fmt.Errorf("writing demo stack file: %w", err)
		}
		return nil
	})
}

// StackFile returns the text of the embedded demo stack file (docs and tests).
func StackFile() string {
	b, _ := stacksFS.ReadFile("stacks/demo.hcl")
	return string(b)
}

// Backends are the bound demo services. Create them with Listen, serve them with Run.
type Backends struct {
	logger hclog.Logger
	tcp    net.Listener
	udp    net.PacketConn
	web    net.Listener
	http   *http.Server
}

// Listen binds the three backends on ip (127.0.0.1 in -dev) at ports the kernel picks, so that
// two dev agents, or a dev agent and a test, never clash.
func Listen(ip string, logger hclog.Logger) (*Backends, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	b := &Backends{logger: logger}
	var err error
	if b.tcp, err = net.Listen("tcp", net.JoinHostPort(ip, "0")); err != nil {
		return nil, fmt.Errorf("demo TCP echo: %w", err)
	}
	if b.udp, err = net.ListenPacket("udp", net.JoinHostPort(ip, "0")); err != nil {
		b.tcp.Close()
		return nil, fmt.Errorf("demo UDP echo: %w", err)
	}
	if b.web, err = net.Listen("tcp", net.JoinHostPort(ip, "0")); err != nil {
		b.tcp.Close()
		b.udp.Close()
		return nil, fmt.Errorf("demo HTTP service: %w", err)
	}
	b.http = &http.Server{Handler: http.HandlerFunc(page), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: idleTimeout,
		MaxHeaderBytes: 16 << 10, ErrorLog: logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})}
	return b, nil
}

// Services are the host-service declarations of the backends, for the dev agent's client role.
func (b *Backends) Services() []config.HostService {
	return []config.HostService{
		{Name: TCPService, Stack: Stack, Protocol: "tcp", Port: b.tcp.Addr().(*net.TCPAddr).Port, CheckInterval: time.Second},
		{Name: UDPService, Stack: Stack, Protocol: "udp", Port: b.udp.LocalAddr().(*net.UDPAddr).Port, CheckInterval: time.Second},
		{Name: WebService, Stack: Stack, Protocol: "tcp", Port: b.web.Addr().(*net.TCPAddr).Port, CheckInterval: time.Second},
	}
}

// Run serves until ctx ends and returns once every backend goroutine has ended.
func (b *Backends) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); b.serveTCP() }()
	go func() { defer wg.Done(); b.serveUDP() }()
	go func() {
		defer wg.Done()
		if err := b.http.Serve(b.web); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.logger.Warn("demo HTTP service stopped", "error", err)
		}
	}()
	for _, s := range b.Services() {
		b.logger.Info("demo backend listening", "service", s.Name, "protocol", s.Protocol, "port", s.Port)
	}
	<-ctx.Done()
	b.tcp.Close()
	b.udp.Close()
	shut, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = b.http.Shutdown(shut)
	cancel()
	wg.Wait()
	return nil
}

// Close releases the sockets of backends that never ran.
func (b *Backends) Close() {
	b.tcp.Close()
	b.udp.Close()
	b.web.Close()
}

// serveTCP echoes every connection, at most maxTCPConns at a time (more are closed at once).
func (b *Backends) serveTCP() {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxTCPConns)
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	defer func() {
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := b.tcp.Accept()
		if err != nil {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer func() { mu.Lock(); delete(open, c); mu.Unlock(); c.Close() }()
			buf := make([]byte, 32<<10)
			for {
				_ = c.SetReadDeadline(time.Now().Add(idleTimeout))
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					if errors.Is(err, io.EOF) {
						if cw, ok := c.(interface{ CloseWrite() error }); ok {
							_ = cw.CloseWrite()
						}
					}
					return
				}
			}
		}()
	}
}

// serveUDP sends every datagram back to its sender.
func (b *Backends) serveUDP() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := b.udp.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		_, _ = b.udp.WriteTo(buf[:n], from)
	}
}

// page answers every request with what the backend saw, so a user can tell the request went
// through the proxy (X-Forwarded-For and friends).
func page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hello from %s, the nullnet demo HTTP service\n", WebService)
	fmt.Fprintf(w, "%s %s Host: %s\n", r.Method, r.URL.RequestURI(), r.Host)
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := r.Header.Get(h); v != "" {
			fmt.Fprintf(w, "%s: %s\n", h, v)
		}
	}
}
