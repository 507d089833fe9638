package certstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nullnet/nullnet/config"
	"golang.org/x/sys/unix"
)

// File names inside a domain's directory (certbot's and most ACME clients' names).
const (
	CertFileName = "fullchain.pem"
	KeyFileName  = "privkey.pem"
)

// Bounds on what a certs_dir can make a server hold. A real chain is 2-6 KiB and a key under
// 4 KiB; 10,000 domains are about 50 MiB.
const (
	MaxCertFileSize = 256 << 10
	MaxKeyFileSize  = 64 << 10
	MaxDirEntries   = 20000
	MaxDirBytes     = 128 << 20
)

// Problem is one rejected entry of a certs_dir.
type Problem struct {
	Domain string // "" when the entry is not a domain at all
	Entry  string // the directory entry's name
	Reason string
}

// stamp identifies one version of a file without reading it: a write, a rename over it or a
// symlink pointed elsewhere changes it.
type stamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
	missing      bool
}

type pairStamp struct{ cert, key stamp }

type dirEntry struct {
	stamp  pairStamp
	domain string
	good   *Certificate // the last good pair (kept while the current one is bad)
	bad    string       // why the current files were rejected ("" = they are good)
	bytes  int64
}

// Dir reads a certs_dir: <dir>/<domain>/fullchain.pem + privkey.pem, wildcards in
// _wildcard.<domain>. Pairs whose files did not change since the last Load are not read again,
// and a bad pair is reported once per content. Not safe for concurrent use.
type Dir struct {
	path    string
	entries map[string]*dirEntry // by entry name
	// overflow is the last "too many" problem reported, so it is not repeated.
	overflow string
	// unreadable: the last Load could not list the directory.
	unreadable bool
}

// NewDir returns a loader for path.
func NewDir(path string) *Dir { return &Dir{path: path, entries: map[string]*dirEntry{}} }

// Path is the directory read.
func (d *Dir) Path() string { return d.path }

// Load reads the directory and returns the certificates to serve (for each domain the current
// pair when good, else the last good one) and the problems not reported before. An error means
// the directory itself could not be listed; the caller keeps what it serves.
func (d *Dir) Load(now time.Time) (map[string]Certificate, []Problem, error) {
	names, err := d.list()
	d.unreadable = err != nil
	if err != nil {
		return nil, nil, err
	}
	var problems []Problem
	overflow := ""
	if len(names) > MaxDirEntries {
		overflow = fmt.Sprintf("certs_dir has %d entries; only the first %d (by name) are read", len(names), MaxDirEntries)
		names = names[:MaxDirEntries]
	}
	next := make(map[string]*dirEntry, len(names))
	byDomain := map[string]string{}
	var total int64
	for _, name := range names {
		domain, err := DomainOfDir(name)
		if err != nil {
			if _, seen := d.entries[name]; !seen {
				problems = append(problems, Problem{Entry: name, Reason: err.Error()})
			}
			next[name] = &dirEntry{bad: err.Error()}
			continue
		}
		if other, dup := byDomain[domain]; dup {
			reason := fmt.Sprintf("directory %q names the same domain as %q; ignored", name, other)
			if _, seen := d.entries[name]; !seen {
				problems = append(problems, Problem{Domain: domain, Entry: name, Reason: reason})
			}
			next[name] = &dirEntry{bad: reason}
			continue
		}
		byDomain[domain] = name
		e, pr := d.loadEntry(name, domain, now, MaxDirBytes-total)
		if pr != nil {
			problems = append(problems, *pr)
		}
		total += e.bytes
		next[name] = e
	}
	if overflow != "" && overflow != d.overflow {
		problems = append(problems, Problem{Reason: overflow})
	}
	d.overflow = overflow
	d.entries = next
	out := map[string]Certificate{}
	for _, e := range next {
		if e.good != nil {
			out[e.domain] = *e.good
		}
	}
	return out, problems, nil
}

// loadEntry (re)validates one domain's pair unless its files are unchanged.
func (d *Dir) loadEntry(name, domain string, now time.Time, budget int64) (*dirEntry, *Problem) {
	prev := d.entries[name]
	if prev != nil && prev.domain != domain {
		prev = nil
	}
	st := d.stampPair(name)
	if prev != nil && prev.stamp == st {
		return prev, nil
	}
	e := &dirEntry{stamp: st, domain: domain}
	if prev != nil {
		e.good = prev.good
	}
	if st.cert.missing && st.key.missing {
		// An empty (or just created) directory: nothing to serve, nothing to report.
		e.good = nil
		return e, nil
	}
	c, err := d.readPair(name, domain, now, budget)
	if err != nil {
		e.bad = err.Error()
	} else {
		e.good = &c
	}
	if e.good != nil {
		e.bytes = int64(len(e.good.CertPEM) + len(e.good.KeyPEM))
	}
	if err != nil {
		return e, &Problem{Domain: domain, Entry: name, Reason: e.bad}
	}
	return e, nil
}

func (d *Dir) readPair(name, domain string, now time.Time, budget int64) (Certificate, error) {
	dir := filepath.Join(d.path, name)
	certPEM, err := readFile(filepath.Join(dir, CertFileName), MaxCertFileSize)
	if err != nil {
		return Certificate{}, err
	}
	keyPEM, err := readFile(filepath.Join(dir, KeyFileName), MaxKeyFileSize)
	if err != nil {
		return Certificate{}, err
	}
	if int64(len(certPEM)+len(keyPEM)) > budget {
		return Certificate{}, fmt.Errorf("certs_dir holds more than %d MiB of certificates; this pair is not loaded", MaxDirBytes>>20)
	}
	return Validate(domain, certPEM, keyPEM, now)
}

func readFile(path string, limit int64) ([]byte, error) {
	b, err := config.ReadRegularFileLimit(path, limit)
	if err == nil {
		return b, nil
	}
	base := filepath.Base(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s is missing", base)
	case errors.Is(err, config.ErrFileTooLarge):
		return nil, fmt.Errorf("%s is larger than %d KiB", base, limit>>10)
	case errors.Is(err, config.ErrNotRegularFile):
		return nil, fmt.Errorf("%s is not a regular file", base)
	}
	return nil, fmt.Errorf("%s: %v", base, err)
}

// list returns the names of the directory's entries that may be domains: directories (or
// symlinks to them), not hidden. Plain files (a README) are skipped.
func (d *Dir) list() ([]string, error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, fmt.Errorf("reading certs_dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if e.Type()&fs.ModeSymlink != 0 {
			if fi, err := os.Stat(filepath.Join(d.path, e.Name())); err != nil || !fi.IsDir() {
				continue
			}
		} else if !e.IsDir() {
			continue
		}
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

func (d *Dir) stampPair(name string) pairStamp {
	dir := filepath.Join(d.path, name)
	return pairStamp{cert: stampOf(filepath.Join(dir, CertFileName)), key: stampOf(filepath.Join(dir, KeyFileName))}
}

// stampOf follows symlinks (certbot's live/ files are links into archive/).
func stampOf(path string) stamp {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return stamp{missing: true}
	}
	return stamp{dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// Changed reports whether the directory differs from what the last Load saw: an entry added or
// removed, or a file of a pair changed. It reads no file contents.
func (d *Dir) Changed() bool {
	names, err := d.list()
	if err != nil {
		return false // retried on the next event or poll, not in a loop
	}
	if d.unreadable {
		return true // it can be read now
	}
	if len(names) > MaxDirEntries {
		names = names[:MaxDirEntries]
	}
	if len(names) != len(d.entries) {
		return true
	}
	for _, name := range names {
		e, ok := d.entries[name]
		if !ok {
			return true
		}
		if e.domain != "" && d.stampPair(name) != e.stamp {
			return true
		}
	}
	return false
}

// Subdirs lists the entries a watcher should watch (the same as Load reads).
func (d *Dir) Subdirs() []string {
	names, err := d.list()
	if err != nil {
		return nil
	}
	if len(names) > MaxDirEntries {
		names = names[:MaxDirEntries]
	}
	return names
}
