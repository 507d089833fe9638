// Package dirwatch reloads a directory after changes: debounced, and no write is ever lost. The
// server watches its stacks directory and its certificates directory with it.
package dirwatch

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// Config says what to watch and what to do about changes.
type Config struct {
	// Name is the directory's role in log lines ("stacks directory").
	Name   string
	Logger hclog.Logger
	// Debounce is the quiet period after the last event before Reload runs.
	Debounce time.Duration
	// Dir returns the directory in effect ("" = none); read at start and on every DirChanged.
	Dir func() string
	// DirChanged wakes the watcher when Dir's answer may have changed (nil = never).
	DirChanged <-chan struct{}
	// Reload reads the directory and applies it.
	Reload func()
	// Changed reports whether the directory differs from what the last Reload processed.
	Changed func() bool
	// Subdirs, when set, lists the subdirectories (names relative to Dir) to watch as well:
	// fsnotify is not recursive. Re-read before every Reload.
	Subdirs func() []string
	// Poll, when positive, checks Changed at this interval besides the events: the safety net
	// when the kernel's watch limit (fs.inotify.max_user_watches) refuses a watch. It also
	// retries watching a directory that did not exist yet.
	Poll time.Duration
}

// Run watches until ctx ends.
//
// Debounce: every event re-arms a trailing-edge timer, so a burst of writes (an editor's
// write-rename-chmod, a `cp -r`) becomes one reload after the quiet period, and the last write of
// a burst is always followed by a reload. After each reload the directory is compared again
// (Changed): a change that landed while the reload was reading (whose event may have been
// consumed before it) re-arms the timer instead of being lost.
func Run(ctx context.Context, cfg Config) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		cfg.Logger.Error("cannot watch the "+cfg.Name+"; only SIGHUP reloads it", "error", err)
		return
	}
	defer w.Close()
	r := &runner{cfg: cfg, w: w, subs: map[string]bool{}}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var poll <-chan time.Time
	if cfg.Poll > 0 {
		t := time.NewTicker(cfg.Poll)
		defer t.Stop()
		poll = t.C
	}
	// A write between the last load (start-up, or a directory change) and the watch taking
	// effect produced no event: compare the directory with what was loaded once the watch is in
	// place.
	watchAndCatchUp := func() {
		r.rewatch()
		if cfg.Changed() {
			timer.Reset(cfg.Debounce)
		}
	}
	watchAndCatchUp()
	for {
		select {
		case <-ctx.Done():
			return
		case <-cfg.DirChanged:
			watchAndCatchUp()
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			cfg.Logger.Trace(cfg.Name+" event", "event", ev.String())
			r.forget(ev)
			timer.Reset(cfg.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow means events were dropped: reload to be safe.
			cfg.Logger.Warn(cfg.Name+" watch error; reloading", "error", err)
			timer.Reset(cfg.Debounce)
		case <-poll:
			if r.watched == "" {
				r.rewatch() // the directory may exist by now
			}
			if cfg.Changed() {
				timer.Reset(cfg.Debounce)
			}
		case <-timer.C:
			// Subdirectories first: a write into one after this point raises an event, and one
			// before it is read by the reload.
			r.syncSubdirs()
			cfg.Reload()
			if cfg.Changed() {
				timer.Reset(cfg.Debounce)
			}
		}
	}
}

type runner struct {
	cfg     Config
	w       *fsnotify.Watcher
	watched string
	subs    map[string]bool // watched subdirectory paths
	// warned: a refused subdirectory watch was logged (once per directory in effect).
	warned bool
	// failed is the directory whose watch was refused last (logged once).
	failed string
}

func (r *runner) rewatch() {
	dir := r.cfg.Dir()
	if dir == r.watched && dir != "" {
		r.syncSubdirs()
		return
	}
	if r.watched != "" {
		_ = r.w.Remove(r.watched)
		for p := range r.subs {
			_ = r.w.Remove(p)
		}
		clear(r.subs)
	}
	r.watched, r.warned = "", false
	if dir == "" {
		return
	}
	// The directory itself is watched, not its files: editors replace files by renaming, which
	// a per-file watch would miss.
	if err := r.w.Add(dir); err != nil {
		if r.failed != dir {
			r.failed = dir
			msg := "cannot watch the " + r.cfg.Name + "; only SIGHUP reloads it"
			if r.cfg.Poll > 0 {
				msg = "cannot watch the " + r.cfg.Name + "; retrying"
			}
			r.cfg.Logger.Error(msg, "dir", dir, "error", err)
		}
		return
	}
	r.failed = ""
	r.watched = dir
	r.syncSubdirs()
}

// forget drops a watched subdirectory that was removed or renamed away: the kernel ended its
// watch, and a directory created again under the name needs a new one.
func (r *runner) forget(ev fsnotify.Event) {
	if ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 && r.subs[ev.Name] {
		_ = r.w.Remove(ev.Name)
		delete(r.subs, ev.Name)
	}
}

// syncSubdirs watches the subdirectories Subdirs lists and drops the watches of those gone.
func (r *runner) syncSubdirs() {
	if r.cfg.Subdirs == nil || r.watched == "" {
		return
	}
	want := map[string]bool{}
	for _, name := range r.cfg.Subdirs() {
		want[filepath.Join(r.watched, name)] = true
	}
	for p := range r.subs {
		if !want[p] {
			_ = r.w.Remove(p)
			delete(r.subs, p)
		}
	}
	for p := range want {
		if r.subs[p] {
			continue
		}
		if err := r.w.Add(p); err != nil {
			if !r.warned {
				r.warned = true
				r.cfg.Logger.Warn("cannot watch a subdirectory of the "+r.cfg.Name+"; its changes are seen by the periodic check",
					"dir", p, "error", err, "poll", r.cfg.Poll)
			}
			continue
		}
		r.subs[p] = true
	}
}
