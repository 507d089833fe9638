package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/hcl/v2"
	"github.com/nullnet/nullnet/agent/dirwatch"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/config"
)

// stacks is the server's view of its stacks directory: the last accepted set, handed to the
// Consul mirror. It only matters on the leader (the mirror writes nothing otherwise), but every
// server validates, so a bad file is reported wherever it is.
type stacks struct {
	// loadMu serializes loads (read, validate, apply), so that sets are applied in the order
	// they were read. It is held during file I/O; mu is not.
	loadMu sync.Mutex
	mu     sync.Mutex // guards the fields below
	// dir is the directory in effect ("" = this server defines no stacks).
	dir string
	// accepted is the last set that passed validation (nil before the first).
	accepted *config.StackSet
	// seen is the fingerprint of the last contents processed, accepted or not, so that an event
	// that changed nothing (chmod, touch) neither reloads nor repeats a rejection.
	seen string
	// dirChanged wakes the watcher when Reload points the server at another directory.
	dirChanged chan struct{}
}

// ErrStacksRejected wraps every rejection of a stack set.
var ErrStacksRejected = errors.New("stack files rejected")

// readStallTimeout is how long reading the stacks directory may take before this server gives up
// the leader lock (a hung file system: the read goes on, but another server should lead).
const readStallTimeout = 10 * time.Second

// reloadStacks reads, validates and, when valid, applies the stacks directory. Without force, a
// directory whose contents did not change since the last load is skipped. A rejected set changes
// nothing: the previous set stays with the mirror, and the diagnostics go to the log and to a
// config_reload_rejected event.
//
// The files are read under loadMu only, never under stacks.mu (which /v1/agent/self, the
// watcher and Reload take): a slow read delays the next reload, nothing else. Only regular files
// are read (config.ReadRegularFile), so a FIFO named *.hcl is an error at once. A directory that
// cannot be read, or a read that stalls for readStallTimeout, makes this server give up the
// leader lock until its stacks read again.
func (s *Server) reloadStacks(trigger string, force bool) error {
	s.stacks.loadMu.Lock()
	defer s.stacks.loadMu.Unlock()
	s.stacks.mu.Lock()
	dir := s.stacks.dir
	s.stacks.mu.Unlock()
	if dir == "" {
		return nil
	}
	s.mu.Lock()
	rules := config.StackRulesFor(s.agentCfg)
	s.mu.Unlock()

	stalled := time.AfterFunc(readStallTimeout, func() {
		s.logger.Error("reading the stacks directory has stalled; giving up the leader lock", "dir", dir,
			"after", readStallTimeout)
		s.setLeaderEligible(false)
	})
	files, err := config.ReadStackFiles(dir)
	stalled.Stop()
	s.setLeaderEligible(err == nil)

	s.stacks.mu.Lock()
	defer s.stacks.mu.Unlock()
	var set *config.StackSet
	if err != nil {
		set = &config.StackSet{Diags: hcl.Diagnostics{{Severity: hcl.DiagError,
			Summary: "Cannot read stacks directory", Detail: err.Error()}}}
		s.stacks.seen = "" // retried in full next time, whatever the fingerprint
		force = true
	} else {
		set = config.ParseStacks(files, rules)
	}
	if !force && set.Fingerprint != "" && set.Fingerprint == s.stacks.seen {
		return nil
	}
	s.stacks.seen = set.Fingerprint

	if set.Diags.HasErrors() {
		text := config.FormatDiagnostics(set.Files, set.Diags)
		s.logger.Error("stack files rejected; keeping the previous set", "dir", dir, "trigger", trigger,
			"diagnostics", "\n"+text)
		first := firstError(set.Diags)
		s.events.Emit(events.Event{Kind: events.ConfigReloadRejected, Severity: events.Error,
			Message: first, Fields: map[string]string{"dir": dir, "trigger": trigger, "diagnostics": text}})
		metrics.IncrCounterWithLabels([]string{"nullnet", "server", "stacks", "reloads"}, 1,
			[]metrics.Label{{Name: "result", Value: "rejected"}})
		return fmt.Errorf("%w: %s\n%s", ErrStacksRejected, dir, text)
	}
	for _, d := range set.Diags { // warnings only at this point
		s.logger.Warn("stack files", "warning", d.Error())
	}
	s.stacks.accepted = set
	if s.mirror != nil {
		s.mirror.Set(catalogServices(set))
	}
	n := len(set.Services())
	s.logger.Info("stack files loaded", "dir", dir, "trigger", trigger, "stacks", len(set.Stacks), "services", n)
	s.events.Emit(events.Event{Kind: events.ConfigReloaded,
		Message: fmt.Sprintf("%d stack(s), %d service(s) loaded from %s", len(set.Stacks), n, dir),
		Fields:  map[string]string{"dir": dir, "trigger": trigger, "stacks": strconv.Itoa(len(set.Stacks)), "services": strconv.Itoa(n)}})
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "stacks", "reloads"}, 1,
		[]metrics.Label{{Name: "result", Value: "ok"}})
	return nil
}

// stacksChangedSinceLoad reports whether the directory differs from what was last processed.
func (s *Server) stacksChangedSinceLoad() bool {
	s.stacks.mu.Lock()
	dir, seen := s.stacks.dir, s.stacks.seen
	s.stacks.mu.Unlock()
	files, err := config.ReadStackFiles(dir)
	if err != nil {
		return false // an unreadable directory is retried by the next event or SIGHUP, not in a loop
	}
	return config.StackFingerprint(files) != seen
}

// watchStacks reloads the stacks directory when anything in it changes, until ctx ends
// (dirwatch: debounced, no write lost).
func (s *Server) watchStacks(ctx context.Context) {
	s.mu.Lock()
	debounce := s.agentCfg.Server.ReloadDebounce
	s.mu.Unlock()
	dirwatch.Run(ctx, dirwatch.Config{
		Name: "stacks directory", Logger: s.logger, Debounce: debounce,
		Dir: func() string {
			s.stacks.mu.Lock()
			defer s.stacks.mu.Unlock()
			return s.stacks.dir
		},
		DirChanged: s.stacks.dirChanged,
		Reload:     func() { _ = s.reloadStacks("file change", false) },
		Changed:    s.stacksChangedSinceLoad,
	})
}

// setLeaderEligible tells the mirror whether this server's stacks can be read (see
// consul.Mirror.SetEligible).
func (s *Server) setLeaderEligible(ok bool) {
	if s.mirror != nil {
		s.mirror.SetEligible(ok)
	}
}

// setStacksDir points the server at a (possibly new) directory and tells the watcher.
func (s *Server) setStacksDir(dir string) {
	s.stacks.mu.Lock()
	changed := s.stacks.dir != dir
	s.stacks.dir = dir
	if changed {
		s.stacks.seen = ""
	}
	s.stacks.mu.Unlock()
	if changed {
		select {
		case s.stacks.dirChanged <- struct{}{}:
		default:
		}
	}
}

// firstError renders the first error as "file:line:col: summary; detail" for an event message.
func firstError(diags hcl.Diagnostics) string {
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += "; " + d.Detail
		}
		if d.Subject != nil {
			msg = fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, msg)
		}
		return msg
	}
	return ""
}
