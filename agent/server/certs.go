package server

import (
	"context"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/dirwatch"
	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/agent/server/certstore"
)

// certsDirPoll is how often server.certs_dir is compared with what was loaded besides the
// change events: the safety net when the kernel refuses a watch on one of its many
// subdirectories (fs.inotify.max_user_watches).
const certsDirPoll = 30 * time.Second

// expiryCheckInterval is how often the expiry gauges and certificate_expiring are refreshed.
const expiryCheckInterval = time.Hour

// maxInvalidEvents bounds the tls_certificate_invalid events of one load: a directory of
// thousands of bad pairs gives this many events and a count in the log, not thousands.
const maxInvalidEvents = 20

// certFiles is the server's view of server.certs_dir, feeding the "file" source of the
// certificate store.
type certFiles struct {
	// loadMu serializes loads; mu guards the fields below and is never held during file I/O.
	loadMu     sync.Mutex
	mu         sync.Mutex
	dir        *certstore.Dir // nil = no certs_dir
	dirChanged chan struct{}
}

// Certificates is the store of certificates every proxy serves. The ACME issuer feeds its
// source and challenges into it.
func (s *Server) Certificates() *certstore.Store { return s.certs }

// initCerts builds the store and loads server.certs_dir once, before any proxy can subscribe.
func (s *Server) initCerts() {
	s.certs = certstore.New(certstore.Config{Logger: s.logger.Named("certs"), Events: s.events})
	s.certFiles.dirChanged = make(chan struct{}, 1)
	if dir := s.agentCfg.Server.CertsDir; dir != "" {
		s.certFiles.dir = certstore.NewDir(dir)
		s.reloadCerts("start")
	}
}

// setCertsDir points the server at certs_dir dir ("" = none) and reads it at once (a reload
// re-reads an unchanged directory too, as SIGHUP does for stacks).
func (s *Server) setCertsDir(dir string) {
	s.certFiles.mu.Lock()
	cur := ""
	if s.certFiles.dir != nil {
		cur = s.certFiles.dir.Path()
	}
	changed := cur != dir
	if changed {
		s.certFiles.dir = nil
		if dir != "" {
			s.certFiles.dir = certstore.NewDir(dir)
		}
	}
	s.certFiles.mu.Unlock()
	s.reloadCerts("reload")
	if changed {
		select {
		case s.certFiles.dirChanged <- struct{}{}:
		default:
		}
	}
}

func (s *Server) certsDir() *certstore.Dir {
	s.certFiles.mu.Lock()
	defer s.certFiles.mu.Unlock()
	return s.certFiles.dir
}

// reloadCerts reads certs_dir and installs its good pairs as the "file" source. A directory
// that cannot be listed changes nothing: the certificates in service stay.
func (s *Server) reloadCerts(trigger string) {
	s.certFiles.loadMu.Lock()
	defer s.certFiles.loadMu.Unlock()
	d := s.certsDir()
	if d == nil {
		s.certs.SetSource(certstore.SourceFile, nil)
		return
	}
	certs, problems, err := d.Load(time.Now())
	if err != nil {
		s.logger.Error("cannot read server.certs_dir; keeping the certificates in service", "dir", d.Path(),
			"trigger", trigger, "error", err)
		metrics.IncrCounterWithLabels([]string{"nullnet", "server", "certs_dir", "reloads"}, 1,
			[]metrics.Label{{Name: "result", Value: "error"}})
		return
	}
	for i, p := range problems {
		if i == maxInvalidEvents {
			s.logger.Error("more certificate pairs rejected", "dir", d.Path(), "count", len(problems)-i)
			break
		}
		s.logger.Error("certificate pair rejected; the previous certificate (if any) stays in service",
			"domain", p.Domain, "entry", p.Entry, "reason", p.Reason)
		s.events.Emit(events.Event{Kind: events.TLSCertificateInvalid, Severity: events.Error, Message: p.Reason,
			Fields: map[string]string{"domain": p.Domain, "dir": d.Path(), "reason": p.Reason}})
	}
	s.certs.SetSource(certstore.SourceFile, certs)
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "certs_dir", "reloads"}, 1,
		[]metrics.Label{{Name: "result", Value: "ok"}})
}

// runCerts watches certs_dir and refreshes expiry checks until ctx ends.
func (s *Server) runCerts(ctx context.Context) {
	s.mu.Lock()
	debounce := s.agentCfg.Server.ReloadDebounce
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// No watcher (an inotify instance) until there is a directory to watch.
		for s.certsDir() == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.certFiles.dirChanged:
			}
		}
		dirwatch.Run(ctx, dirwatch.Config{
			Name: "certs directory", Logger: s.logger.Named("certs"), Debounce: debounce, Poll: certsDirPoll,
			Dir: func() string {
				if d := s.certsDir(); d != nil {
					return d.Path()
				}
				return ""
			},
			DirChanged: s.certFiles.dirChanged,
			Reload:     func() { s.reloadCerts("file change") },
			Changed: func() bool {
				s.certFiles.loadMu.Lock()
				defer s.certFiles.loadMu.Unlock()
				d := s.certsDir()
				return d != nil && d.Changed()
			},
			Subdirs: func() []string {
				s.certFiles.loadMu.Lock()
				defer s.certFiles.loadMu.Unlock()
				if d := s.certsDir(); d != nil {
					return d.Subdirs()
				}
				return nil
			},
		})
	}()
	t := time.NewTicker(expiryCheckInterval)
	defer t.Stop()
	s.certs.CheckExpiry(time.Now())
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case now := <-t.C:
			s.certs.CheckExpiry(now)
		}
	}
}
