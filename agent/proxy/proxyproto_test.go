package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/proxyproto"
	"github.com/nullnet/nullnet/config"
	pp "github.com/pires/go-proxyproto"
)

// The PROXY protocol tests use a distinct client address, 127.0.0.23 (a loopback alias every
// Linux host has), so that the client's address is told apart from the proxy's (127.0.0.1), and
// real peers: nginx with `listen ... proxy_protocol` as the upstream, HAProxy with
// send-proxy-v2 as the front load balancer, curl as the client.
const ppClient = "127.0.0.23"

// clientRecorder is a Resolver that remembers the client address of every Resolve: what the
// Proxy RPC's client_ip (sessions, stickiness) would be.
type clientRecorder struct {
	*testResolver
	mu      sync.Mutex
	clients []netip.Addr
}

func (r *clientRecorder) Resolve(ctx context.Context, client netip.Addr, service string, p Protocol) (Lease, error) {
	r.mu.Lock()
	r.clients = append(r.clients, client)
	r.mu.Unlock()
	return r.testResolver.Resolve(ctx, client, service, p)
}

func (r *clientRecorder) last() netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.clients) == 0 {
		return netip.Addr{}
	}
	return r.clients[len(r.clients)-1]
}

// runTool starts a real server process for the test's lifetime; it fails the test if the tool
// is missing.
func runTool(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("this test needs %s (scripts/setup installs it): %v", name, err)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s output:\n%s", name, b)
		}
	})
}

// waitTCP waits until addr accepts connections.
func waitTCP(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, 15*time.Second, addr+" accepting", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// startNginxPP runs nginx with `listen ... proxy_protocol` on a free port. It answers every
// request with the address the PROXY header gave ($proxy_protocol_addr) and logs it, with the
// socket's peer, to the returned log file.
func startNginxPP(t *testing.T) (netip.AddrPort, string) {
	t.Helper()
	return startNginx(t, "")
}

// startNginx is startNginxPP; with tlsName it terminates TLS with a self-signed certificate for
// that name (made by openssl) and also answers the server name it got.
func startNginx(t *testing.T, tlsName string) (netip.AddrPort, string) {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	logPath := filepath.Join(dir, "access.log")
	listen, answer := "proxy_protocol;", `pp=$proxy_protocol_addr\n`
	if tlsName != "" {
		out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
			"-nodes", "-days", "1", "-subj", "/CN="+tlsName, "-keyout", filepath.Join(dir, "key.pem"),
			"-out", filepath.Join(dir, "cert.pem")).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl req: %v\n%s", err, out)
		}
		listen = fmt.Sprintf("ssl proxy_protocol;\n    ssl_certificate %[1]s/cert.pem;\n    ssl_certificate_key %[1]s/key.pem;", dir)
		answer = `pp=$proxy_protocol_addr sni=$ssl_server_name\n`
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 64; }
http {
  log_format pp '$proxy_protocol_addr:$proxy_protocol_port peer=$remote_addr';
  access_log %[2]s pp;
  server {
    listen 127.0.0.1:%[3]d %[4]s
    location / { return 200 "%[5]s"; }
  }
}
`, dir, logPath, port, listen, answer)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, dir, "nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", "stderr")
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	waitTCP(t, addr.String())
	return addr, logPath
}

// startHAProxy runs HAProxy forwarding each frontend port to its backend with send-proxy-v2.
func startHAProxy(t *testing.T, routes map[uint16]string) {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n")
	for fe, be := range routes {
		fmt.Fprintf(&b, "listen l%d\n  bind 127.0.0.1:%d\n  server s1 %s send-proxy-v2\n", fe, fe, be)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, dir, "haproxy", "-db", "-f", cfg)
	for fe := range routes {
		waitTCP(t, fmt.Sprintf("127.0.0.1:%d", fe))
	}
}

// curlFrom is curl with its source address bound to ppClient.
func curlFrom(t *testing.T, url string, args ...string) (int, string) {
	t.Helper()
	return curl(t, url, append([]string{"--interface", ppClient}, args...)...)
}

// TestSendProxyProtocolToNginx: a tcp service with send_proxy_protocol "v1" and "v2" in front of
// nginx `listen ... proxy_protocol`: nginx sees the client's address (127.0.0.23), not the
// proxy's (its socket peer, 127.0.0.1).
func TestSendProxyProtocolToNginx(t *testing.T) {
	nginx, logPath := startNginxPP(t)
	res := &clientRecorder{testResolver: newTestResolver()}
	res.set("web", nginx)
	tp := startProxy(t, res, nil)
	for _, v := range []proxyproto.Version{proxyproto.V1, proxyproto.V2} {
		t.Run(v.String(), func(t *testing.T) {
			port := freePort(t)
			tp.applyPP(uint64(v), ppMapping{Mapping{Protocol: TCP, Port: port, Service: "web"}, v})
			tp.waitListening(t, TCP, port)
			code, body := curlFrom(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
			if code != 200 || strings.TrimSpace(body) != "pp="+ppClient {
				t.Fatalf("nginx answered %d %q, want pp=%s", code, body, ppClient)
			}
			lines := readLogLines(t, logPath)
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, ppClient+":") || !strings.HasSuffix(last, "peer=127.0.0.1") {
				t.Fatalf("nginx log line %q: want the client %s behind peer 127.0.0.1", last, ppClient)
			}
		})
	}
	if got := res.last(); got.String() != ppClient {
		t.Fatalf("Proxy RPC client %v, want %s", got, ppClient)
	}
}

func readLogLines(t *testing.T, path string) []string {
	t.Helper()
	var lines []string
	waitFor(t, 5*time.Second, "a line in "+path, func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(b) > 0
	})
	return lines
}

// udpHeaderServer is a UDP upstream that parses the PROXY v2 header of every datagram with the
// library and answers "<source> <payload>" (or "noheader <error>").
func udpHeaderServer(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var reply string
			h, payload, err := pp.ParseUDPDatagram(buf[:n])
			switch {
			case err != nil:
				reply = "noheader " + err.Error()
			case h.TransportProtocol != pp.UDPv4 && h.TransportProtocol != pp.UDPv6:
				reply = fmt.Sprintf("wrong transport %x", h.TransportProtocol)
			default:
				reply = h.SourceAddr.String() + " " + string(payload)
			}
			_, _ = pc.WriteToUDPAddrPort([]byte(reply), from)
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// TestSendProxyProtocolUDP: a udp service with send_proxy_protocol "v2": every datagram the
// upstream gets carries a v2 header (DGRAM) with the client's address and port.
func TestSendProxyProtocolUDP(t *testing.T) {
	up := udpHeaderServer(t)
	res := newTestResolver()
	res.set("dns", up)
	tp := startProxy(t, res, nil)
	port := freePort(t)
	tp.applyPP(1, ppMapping{Mapping{Protocol: UDP, Port: port, Service: "dns"}, proxyproto.V2})
	tp.waitListening(t, UDP, port)

	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ppClient)},
		&net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 5 {
		msg := fmt.Sprintf("query-%d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: no reply: %v", i, err)
		}
		if want := c.LocalAddr().String() + " " + msg; string(buf[:n]) != want {
			t.Fatalf("upstream saw %q, want %q", buf[:n], want)
		}
	}
}

// TestProxyProtocolFromHAProxy: HAProxy in front (send-proxy-v2) and proxy_protocol_from
// listing it. The client's address (127.0.0.23) reaches the Proxy RPC, the upstream's own PROXY
// header (nginx) and X-Forwarded-For from the HTTP router. A client outside the list that sends
// a header is a client like any other: its header is data. A trusted peer that sends no header
// or garbage is cut off, counted, and the proxy goes on.
func TestProxyProtocolFromHAProxy(t *testing.T) {
	nginx, _ := startNginxPP(t)
	var seenXFF sync.Map
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenXFF.Store(r.Header.Get("X-Forwarded-For"), true)
		fmt.Fprintf(w, "xff=%s", r.Header.Get("X-Forwarded-For"))
	}))
	defer web.Close()
	var rawMu sync.Mutex
	var raw []byte
	sink := tcpUpstream(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		rawMu.Lock()
		raw = b
		rawMu.Unlock()
	})

	res := &clientRecorder{testResolver: newTestResolver()}
	res.set("nginx", nginx)
	res.set("web", netip.MustParseAddrPort(strings.TrimPrefix(web.URL, "http://")))
	res.set("sink", addrOf(t, sink.Addr()))
	tp := startProxy(t, res, func(a *config.Config, c *Config) {
		a.Proxy.ProxyProtocolFrom = []string{"127.0.0.1/32"}
		c.DisableHTTP = false
	})
	waitFor(t, 10*time.Second, "HTTP router bound", func() bool { return tp.http.Addr() != "" })
	tcpPort, sinkPort := freePort(t), freePort(t)
	tp.applyPP(1, ppMapping{Mapping{Protocol: TCP, Port: tcpPort, Service: "nginx"}, proxyproto.V2},
		ppMapping{Mapping{Protocol: TCP, Port: sinkPort, Service: "sink"}, proxyproto.None})
	tp.waitListening(t, TCP, tcpPort)
	tp.waitListening(t, TCP, sinkPort)
	feTCP, feHTTP := freePort(t), freePort(t)
	startHAProxy(t, map[uint16]string{feTCP: fmt.Sprintf("127.0.0.1:%d", tcpPort), feHTTP: tp.http.Addr()})

	t.Run("tcp through haproxy", func(t *testing.T) {
		code, body := curlFrom(t, fmt.Sprintf("http://127.0.0.1:%d/", feTCP))
		if code != 200 || strings.TrimSpace(body) != "pp="+ppClient {
			t.Fatalf("nginx behind haproxy and the proxy answered %d %q, want pp=%s", code, body, ppClient)
		}
		if got := res.last(); got.String() != ppClient {
			t.Fatalf("Proxy RPC client %v, want %s", got, ppClient)
		}
	})
	t.Run("http router through haproxy", func(t *testing.T) {
		code, body := curlFrom(t, fmt.Sprintf("http://127.0.0.1:%d/", feHTTP), "-H", "Host: web", "-H", "X-Forwarded-For: 6.6.6.6")
		if code != 200 || body != "xff="+ppClient {
			t.Fatalf("router answered %d %q, want xff=%s", code, body, ppClient)
		}
		if got := res.last(); got.String() != ppClient {
			t.Fatalf("Proxy RPC client %v, want %s", got, ppClient)
		}
	})
	t.Run("untrusted peer's header is data", func(t *testing.T) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ppClient)}}
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sinkPort))
		if err != nil {
			t.Fatal(err)
		}
		forged := append(proxyproto.AppendV1(nil, netip.MustParseAddrPort("6.6.6.6:1"),
			netip.MustParseAddrPort("7.7.7.7:2")), "hello"...)
		if _, err := c.Write(forged); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		_, _ = io.ReadAll(c)
		c.Close()
		waitFor(t, 5*time.Second, "the sink got the bytes", func() bool {
			rawMu.Lock()
			defer rawMu.Unlock()
			return bytes.Equal(raw, forged)
		})
		if got := res.last(); got.String() != ppClient {
			t.Fatalf("Proxy RPC client %v, want %s (the forged header must not count)", got, ppClient)
		}
	})
	t.Run("header and first bytes in one segment", func(t *testing.T) {
		src := netip.MustParseAddrPort("203.0.113.5:4242")
		dst := netip.MustParseAddrPort("192.0.2.1:80")
		// HTTP router: the request right behind a v1 header.
		c := dialProxy(t, tp.httpPort(t)) // from 127.0.0.1: trusted
		req := "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
		if _, err := c.Write(append(proxyproto.AppendV1(nil, src, dst), req...)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.HasSuffix(resp, []byte("xff=203.0.113.5")) {
			t.Fatalf("router answered %q (%v), want xff=203.0.113.5", resp, err)
		}
		// TCP: the data behind a v2 header reaches the upstream, the header does not.
		c = dialProxy(t, sinkPort)
		if _, err := c.Write(append(proxyproto.AppendV2(nil, proxyproto.Stream, src, dst), "payload"...)); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		_, _ = io.ReadAll(c)
		c.Close()
		waitFor(t, 5*time.Second, "the sink got the payload alone", func() bool {
			rawMu.Lock()
			defer rawMu.Unlock()
			return string(raw) == "payload"
		})
		if got := res.last(); got != src.Addr() {
			t.Fatalf("Proxy RPC client %v, want %v", got, src.Addr())
		}
	})
	t.Run("trusted peer without a valid header is cut off", func(t *testing.T) {
		before := tp.headerRejects.Load()
		v2 := proxyproto.AppendV2(nil, proxyproto.Stream, netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("5.6.7.8:9"))
		badVersion := append(append([]byte(nil), v2[:12]...), 0x31)
		badVersion = append(badVersion, v2[13:]...)
		bigLen := append(append([]byte(nil), v2[:14]...), 0xff, 0xff)
		for _, garbage := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: web\r\n\r\n"), []byte("PROXY TCP4 garbage\r\n"),
			badVersion, bigLen, bytes.Repeat([]byte{0x0d, 0x0a}, 300)} {
			for _, port := range []uint16{sinkPort, tp.httpPort(t)} {
				c := dialProxy(t, port) // from 127.0.0.1: trusted
				_, _ = c.Write(garbage)
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := c.Read(make([]byte, 512))
				c.Close()
				if err == nil || n > 0 {
					t.Fatalf("%q on port %d: read %d bytes, %v; want the connection closed", garbage, port, n, err)
				}
			}
		}
		if got := tp.headerRejects.Load() - before; got != 10 {
			t.Fatalf("%d rejected headers counted, want 10", got)
		}
		// The proxy goes on: the next client through HAProxy is served.
		if code, body := curlFrom(t, fmt.Sprintf("http://127.0.0.1:%d/", feTCP)); code != 200 || strings.TrimSpace(body) != "pp="+ppClient {
			t.Fatalf("after garbage: %d %q", code, body)
		}
	})
}

func (tp *testProxy) httpPort(t *testing.T) uint16 {
	t.Helper()
	return netip.MustParseAddrPort(tp.http.Addr()).Port()
}

// TestProxyProtocolFromUDP: datagrams from a trusted front load balancer carry a v2 header each
// (built here with the library); the session's client is the header's, the upstream (with
// send_proxy_protocol "v2") sees it, replies go back to the balancer. A datagram without a
// header from the balancer is dropped and counted.
func TestProxyProtocolFromUDP(t *testing.T) {
	up := udpHeaderServer(t)
	res := &clientRecorder{testResolver: newTestResolver()}
	res.set("dns", up)
	tp := startProxy(t, res, func(a *config.Config, _ *Config) { a.Proxy.ProxyProtocolFrom = []string{"127.0.0.1"} })
	port := freePort(t)
	tp.applyPP(1, ppMapping{Mapping{Protocol: UDP, Port: port, Service: "dns"}, proxyproto.V2})
	tp.waitListening(t, UDP, port)

	lb, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")}, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	client := &net.UDPAddr{IP: net.ParseIP("198.51.100.7"), Port: 5555}
	h := pp.HeaderProxyFromAddrs(2, client, &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 53})
	buf := make([]byte, 2048)
	for i := range 3 {
		d, err := h.FormatUDPDatagram([]byte(fmt.Sprintf("q%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lb.Write(d); err != nil {
			t.Fatal(err)
		}
		_ = lb.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := lb.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: no reply: %v", i, err)
		}
		if want := fmt.Sprintf("%s q%d", client, i); string(buf[:n]) != want {
			t.Fatalf("upstream saw %q, want %q", buf[:n], want)
		}
	}
	if got := res.last(); got != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("Proxy RPC client %v, want 198.51.100.7", got)
	}
	before := tp.headerRejects.Load()
	if _, err := lb.Write([]byte("no header")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the headerless datagram counted", func() bool { return tp.headerRejects.Load() == before+1 })
	_ = lb.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := lb.Read(buf); err == nil {
		t.Fatalf("headerless datagram was relayed: reply %q", buf[:n])
	}
}

// TestSendProxyProtocolTLSPassthrough: two tls services on one port, routed by SNI; the one with
// send_proxy_protocol "v2" (nginx `listen … ssl proxy_protocol`, terminating TLS itself) gets the
// header before the ClientHello and sees the client (127.0.0.23), the other none. Behind HAProxy
// (send-proxy-v2, proxy_protocol_from), the header read before the ClientHello gives the same
// client.
func TestSendProxyProtocolTLSPassthrough(t *testing.T) {
	nginx, _ := startNginx(t, "pp.example")
	plain := startTLSBackend(t, "plain.example")
	res := &clientRecorder{testResolver: newTestResolver()}
	res.set("pp.example", nginx)
	res.set("plain.example", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(plain.port())))
	tp := startProxy(t, res, func(a *config.Config, _ *Config) { a.Proxy.ProxyProtocolFrom = []string{"127.0.0.1/32"} })
	port := freePort(t)
	tp.applyPP(1, ppMapping{Mapping{Protocol: TLS, Port: port, Service: "pp.example"}, proxyproto.V2},
		ppMapping{Mapping{Protocol: TLS, Port: port, Service: "plain.example"}, proxyproto.None})
	tp.waitListening(t, TLS, port)
	fe := freePort(t)
	startHAProxy(t, map[uint16]string{fe: fmt.Sprintf("127.0.0.1:%d", port)})

	for _, via := range []struct {
		name string
		port uint16
	}{{"direct", port}, {"through haproxy", fe}} {
		t.Run(via.name, func(t *testing.T) {
			url := fmt.Sprintf("https://pp.example:%d/", via.port)
			code, body := curlFrom(t, url, "-k", "--resolve", fmt.Sprintf("pp.example:%d:127.0.0.1", via.port))
			if want := "pp=" + ppClient + " sni=pp.example"; code != 200 || strings.TrimSpace(body) != want {
				t.Fatalf("nginx answered %d %q, want %q", code, body, want)
			}
			if got := res.last(); got.String() != ppClient {
				t.Fatalf("Proxy RPC client %v, want %s", got, ppClient)
			}
			// The service without the key gets the ClientHello first, as ever (its TLS works).
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ppClient)}, Timeout: 5 * time.Second}
			raw, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", via.port))
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, &tls.Config{ServerName: "plain.example", InsecureSkipVerify: true})
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "backend=plain.example sni=plain.example") {
				t.Fatalf("plain backend: %q %v", line, err)
			}
		})
	}
}

// TestProxyProtocolFromHAProxyHTTPS: HAProxy (send-proxy-v2) in front of the HTTPS listener;
// the header is read before the TLS handshake, and the upstream's X-Forwarded-For is the client
// (127.0.0.23). The list is set by a reload, as an operator would.
func TestProxyProtocolFromHAProxyHTTPS(t *testing.T) {
	f := startHTTPSFixture(t)
	cfg := config.Default()
	cfg.Proxy.ProxyProtocolFrom = []string{"127.0.0.1/32"}
	cfg.Proxy.BindAddr = "127.0.0.1"
	if err := f.tp.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	fe := freePort(t)
	startHAProxy(t, map[uint16]string{fe: f.httpsAddr})
	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--interface", ppClient, "--cacert", f.caFile,
		"--resolve", fmt.Sprintf("web.example.com:%d:127.0.0.1", fe),
		fmt.Sprintf("https://web.example.com:%d/x", fe)).CombinedOutput()
	if err != nil {
		t.Fatalf("curl through haproxy: %v\n%s", err, out)
	}
	_, h := upstreamSaw(t, string(out))
	if got := h.Get("X-Forwarded-For"); got != ppClient {
		t.Fatalf("X-Forwarded-For %q, want %s (upstream saw %s)", got, ppClient, out)
	}
}
