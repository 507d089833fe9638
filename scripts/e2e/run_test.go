package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Several runs of the suite may share a host (two engineers, two CI jobs, `make test` next to
// `make e2e`). Each run therefore owns:
//   - a prefix, "nne" + 5 hex digits, that starts every namespace, root-namespace link and
//     temp dir it creates (short: the root link "<prefix>-rt" must fit IFNAMSIZ, 15 bytes);
//   - an underlay subnet 10.98.<N>.0/24 that no other run and no address on the host uses
//     (the root namespace holds one address of it, so two runs on one subnet would steal each
//     other's routes);
//   - a marker file /run/nullnet-e2e/<prefix>.pid naming its process (pid and start time) and
//     subnet, written before anything is created and removed after everything is gone.
// Every daemon runs inside the run's own namespaces, so ports need no allocation: each host
// namespace has its own port space.
//
// A run removes leftovers only of runs whose owner process is gone: a marker whose process no
// longer exists (or is another process with a reused pid), and a prefix-shaped object with no
// marker at all (a marker outlives what it names, so such an object has no owner). Names of
// the older harness ("nne-…") never match and are left alone.

const (
	runDir       = "/run/nullnet-e2e"
	runLockFile  = ".lock"
	underlayNet  = "10.98" // + .<N>.0/24, N in 1..254 per run
	tempDirStart = "nullnet-e2e-"
)

// prefixRE matches a run prefix at the start of a name.
var prefixRE = regexp.MustCompile(`^(nne[0-9a-f]{5})(-|$)`)

// run is this process's identity on the host; set by claimRun in TestMain.
var thisRun struct {
	prefix string
	subnet int // N of 10.98.N.0/24
}

// runMarker is one marker file's content.
type runMarker struct {
	prefix string
	pid    int
	start  string // field 22 of /proc/<pid>/stat: tells a reused pid apart
	subnet int
}

func markerPath(prefix string) string { return filepath.Join(runDir, prefix+".pid") }

// claimRun picks this run's prefix and subnet and writes its marker, after removing the
// leftovers of dead runs. A short flock makes the choice atomic between runs starting together;
// the runs themselves are not serialised.
func claimRun(logf func(string, ...any)) error {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(runDir, runLockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", runDir, err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)

	live := removeLeftovers(logf)
	used := map[int]bool{}
	prefixes := map[string]bool{}
	for _, m := range live {
		used[m.subnet] = true
		prefixes[m.prefix] = true
	}
	// Addresses anyone holds in 10.98.0.0/16 (a run of another tool, a hand-made interface).
	if out, err := run(nil, "ip", "-4", "-o", "addr", "show"); err == nil {
		re := regexp.MustCompile(`inet ` + regexp.QuoteMeta(underlayNet) + `\.(\d+)\.`)
		for _, m := range re.FindAllStringSubmatch(out, -1) {
			n, _ := strconv.Atoi(m[1])
			used[n] = true
		}
	}
	start := os.Getpid() % 254
	for i := range 254 {
		if n := (start+i)%254 + 1; !used[n] {
			thisRun.subnet = n
			break
		}
	}
	if thisRun.subnet == 0 {
		return errors.New("no free underlay subnet in " + underlayNet + ".0.0/16")
	}
	for {
		p := fmt.Sprintf("nne%05x", rand.IntN(1<<20))
		if !prefixes[p] {
			thisRun.prefix = p
			break
		}
	}
	m := runMarker{prefix: thisRun.prefix, pid: os.Getpid(), start: procStart(os.Getpid()), subnet: thisRun.subnet}
	if err := os.WriteFile(markerPath(m.prefix), []byte(fmt.Sprintf("%d %s %d\n", m.pid, m.start, m.subnet)), 0o644); err != nil {
		return err
	}
	// Registered first, so it runs last: the marker outlives everything it names.
	registry.add("run marker", func() { os.Remove(markerPath(m.prefix)) })
	logf("this run: prefix %s, underlay %s.%d.0/24, marker %s", m.prefix, underlayNet, m.subnet, markerPath(m.prefix))
	return nil
}

// readMarkers lists every marker file.
func readMarkers() []runMarker {
	files, _ := filepath.Glob(filepath.Join(runDir, "nne*.pid"))
	var out []runMarker
	for _, f := range files {
		prefix := strings.TrimSuffix(filepath.Base(f), ".pid")
		if !prefixRE.MatchString(prefix) {
			continue
		}
		m, err := parseMarker(prefix, f)
		if err != nil {
			continue // unreadable: treated as absent, i.e. dead
		}
		out = append(out, m)
	}
	return out
}

func parseMarker(prefix, path string) (runMarker, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return runMarker{}, err
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return runMarker{}, fmt.Errorf("%s: malformed", path)
	}
	m := runMarker{prefix: prefix, start: f[1]}
	if m.pid, err = strconv.Atoi(f[0]); err != nil {
		return m, err
	}
	if m.subnet, err = strconv.Atoi(f[2]); err != nil {
		return m, err
	}
	return m, nil
}

// alive reports whether the marker's process still exists and is the one that wrote it.
func (m runMarker) alive() bool {
	if m.pid <= 0 {
		return false
	}
	if err := syscall.Kill(m.pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	return procStart(m.pid) == m.start
}

// procStart is a process's start time in clock ticks since boot ("" when it does not exist).
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; fields after its closing parenthesis are
	// plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22 overall
}

// otherLiveRuns reports whether a run other than this one is alive.
func otherLiveRuns() bool {
	for _, m := range readMarkers() {
		if m.prefix != thisRun.prefix && m.alive() {
			return true
		}
	}
	return false
}

// removeLeftovers deletes what dead runs left (namespaces, root-namespace links, temp dirs,
// markers) and returns the markers of live runs. A temp dir a run was asked to keep
// (NULLNET_E2E_KEEP leaves a marker in it) stays.
func removeLeftovers(logf func(string, ...any)) []runMarker {
	live := map[string]runMarker{}
	dead := map[string]bool{}
	for _, m := range readMarkers() {
		if m.alive() {
			live[m.prefix] = m
		} else {
			dead[m.prefix] = true
		}
	}
	// Prefix-shaped objects nobody's marker names are dead too.
	owned := func(name string) (string, bool) {
		sm := prefixRE.FindStringSubmatch(name)
		if sm == nil {
			return "", false
		}
		_, isLive := live[sm[1]]
		return sm[1], !isLive
	}
	if out, err := run(nil, "ip", "netns", "list"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if p, isDead := owned(f[0]); isDead {
				logf("removing namespace %s left by dead run %s", f[0], p)
				deleteNamespace(f[0])
			}
		}
	}
	if out, err := run(nil, "ip", "-o", "link", "show"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if p, isDead := owned(name); isDead {
				logf("removing link %s left by dead run %s", name, p)
				_, _ = run(nil, "ip", "link", "del", name)
			}
		}
	}
	if dirs, err := filepath.Glob(filepath.Join(os.TempDir(), tempDirStart+"nne*")); err == nil {
		for _, d := range dirs {
			p, isDead := owned(strings.TrimPrefix(filepath.Base(d), tempDirStart))
			if !isDead {
				continue
			}
			if _, err := os.Stat(filepath.Join(d, keepMarker)); err == nil {
				continue
			}
			logf("removing directory %s left by dead run %s", d, p)
			os.RemoveAll(d)
		}
	}
	for p := range dead {
		os.Remove(markerPath(p))
	}
	out := make([]runMarker, 0, len(live))
	for _, m := range live {
		out = append(out, m)
	}
	return out
}
