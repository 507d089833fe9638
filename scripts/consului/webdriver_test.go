package consului

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// webDriver is the little of the W3C WebDriver protocol this test needs, spoken to Debian's
// chromedriver driving Debian's headless chromium.
type webDriver struct {
	base    string
	session string
	cmd     *exec.Cmd
}

func startWebDriver(t *testing.T) *webDriver {
	t.Helper()
	for _, bin := range []string{"chromedriver", "chromium"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: run scripts/setup (make test does), or apt-get install chromium chromium-driver (the Consul UI test drives a real browser)", bin)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("chromedriver", "--port="+strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromedriver: %v", err)
	}
	wd := &webDriver{base: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	t.Cleanup(wd.close)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(wd.base + "/status"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("chromedriver did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	userDir := t.TempDir()
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": "/usr/bin/chromium",
			"args": []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
				"--disable-background-networking", "--disable-component-update", "--disable-sync",
				"--disable-dev-shm-usage", "--window-size=1280,1000", "--user-data-dir=" + userDir},
		},
	}}}
	var out struct {
		Value struct {
			SessionID string `json:"sessionId"`
		} `json:"value"`
	}
	if err := wd.call("POST", "/session", caps, &out); err != nil {
		t.Fatalf("new browser session: %v", err)
	}
	wd.session = out.Value.SessionID
	return wd
}

func (wd *webDriver) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, wd.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (wd *webDriver) open(url string) error {
	return wd.call("POST", "/session/"+wd.session+"/url", map[string]string{"url": url}, nil)
}

// text is the rendered page's visible text.
func (wd *webDriver) text() (string, error) {
	var out struct {
		Value string `json:"value"`
	}
	err := wd.call("POST", "/session/"+wd.session+"/execute/sync",
		map[string]any{"script": "return document.body ? document.body.innerText : ''", "args": []any{}}, &out)
	return out.Value, err
}

func (wd *webDriver) screenshot(path string) error {
	var out struct {
		Value string `json:"value"`
	}
	if err := wd.call("GET", "/session/"+wd.session+"/screenshot", nil, &out); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(out.Value)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}

func (wd *webDriver) close() {
	if wd.session != "" {
		_ = wd.call("DELETE", "/session/"+wd.session, nil, nil)
	}
	_ = syscall.Kill(-wd.cmd.Process.Pid, syscall.SIGKILL)
	_ = wd.cmd.Wait()
}

// click clicks the first element matching an XPath expression.
func (wd *webDriver) click(xpath string) error {
	var out struct {
		Value map[string]string `json:"value"`
	}
	if err := wd.call("POST", "/session/"+wd.session+"/element", map[string]string{"using": "xpath", "value": xpath}, &out); err != nil {
		return err
	}
	for _, id := range out.Value { // the key is the W3C element identifier
		return wd.call("POST", "/session/"+wd.session+"/element/"+id+"/click", map[string]any{}, nil)
	}
	return fmt.Errorf("no element for %s", xpath)
}
