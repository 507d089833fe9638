package containers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"github.com/nullnet/nullnet/lib/retry"
)

// Config of a Watcher.
type Config struct {
	// Docker talks to the engine; nil means client.New(client.FromEnv) (DOCKER_HOST or the
	// local socket), with API version negotiation.
	Docker *client.Client
	// Named are containers the agent config names (client { container "name" {...} }), by
	// container name; they are replicas without labels, and the config wins over labels.
	Named  map[string]Spec
	Logger hclog.Logger
}

// Watcher keeps the current set of container replicas of the local Docker Engine.
type Watcher struct {
	docker *client.Client
	named  map[string]Spec
	logger hclog.Logger
	notify chan struct{}
	resync chan struct{} // SetNamed asks for a fresh list

	mu       sync.Mutex
	replicas map[string]Replica // by container ID
	warned   map[string]bool    // container IDs whose bad labels were logged once
	synced   bool
}

// New makes a Watcher; Run starts it.
func New(cfg Config) (*Watcher, error) {
	docker := cfg.Docker
	if docker == nil {
		var err error
		docker, err = client.New(client.FromEnv)
		if err != nil {
			return nil, fmt.Errorf("docker engine client: %w", err)
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Watcher{docker: docker, named: normalize(cfg.Named), logger: logger, notify: make(chan struct{}, 1),
		resync: make(chan struct{}, 1), replicas: map[string]Replica{}, warned: map[string]bool{}}, nil
}

func normalize(in map[string]Spec) map[string]Spec {
	named := make(map[string]Spec, len(in))
	for n, s := range in {
		if s.Protocol == "" {
			s.Protocol = "tcp"
		}
		named[strings.TrimPrefix(n, "/")] = s
	}
	return named
}

// SetNamed replaces the config-named containers (SIGHUP) and relists the engine.
func (w *Watcher) SetNamed(named map[string]Spec) {
	n := normalize(named)
	w.mu.Lock()
	w.named = n
	w.mu.Unlock()
	select {
	case w.resync <- struct{}{}:
	default:
	}
}

func (w *Watcher) namedSpec(name string) (Spec, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.named[name]
	return s, ok
}

// Changes receives a value (coalesced) whenever the replica set changed.
func (w *Watcher) Changes() <-chan struct{} { return w.notify }

// Synced tells whether the watcher has listed the engine at least once (before that an empty
// set means "unknown", not "no replicas": a registrar must not deregister on it).
func (w *Watcher) Synced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synced
}

// Replicas is the current set, sorted by container name.
func (w *Watcher) Replicas() []Replica {
	w.mu.Lock()
	out := make([]Replica, 0, len(w.replicas))
	for _, r := range w.replicas {
		out = append(out, r)
	}
	w.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Run follows the engine until ctx ends, reconnecting with backoff when the engine goes away
// (a restarting dockerd); each connection starts with a full list so nothing is missed.
func (w *Watcher) Run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		listed, err := w.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if listed {
			failures = 0 // the connection worked: a later cut starts the backoff afresh
		}
		failures++
		if failures == 1 || failures%10 == 0 {
			w.logger.Warn("docker engine unreachable or event stream ended; reconnecting", "error", err, "failures", failures)
		}
		if !retry.Sleep(ctx, retry.Backoff(100*time.Millisecond, 10*time.Second, failures)) {
			return
		}
	}
}

// follow subscribes to container events, lists, then applies events until the stream fails;
// listed says whether the list succeeded.
func (w *Watcher) follow(ctx context.Context) (listed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe first: an event between the list and the subscription would be lost otherwise.
	ev := w.docker.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", string(events.ContainerEventType))})
	if err := w.relist(ctx); err != nil {
		return false, err
	}
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-ev.Err:
			if err == nil {
				err = errors.New("stream closed")
			}
			return true, fmt.Errorf("docker event stream: %w", err)
		case m := <-ev.Messages:
			w.apply(ctx, m)
		case <-w.resync:
			if err := w.relist(ctx); err != nil {
				return true, err
			}
		}
	}
}

// relist replaces the set with what the engine lists (running, paused and stopped).
func (w *Watcher) relist(ctx context.Context) error {
	list, err := w.docker.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	next := map[string]Replica{}
	for _, c := range list.Items {
		if !w.candidate(c.Labels, c.Names) {
			continue
		}
		r, ok, err := w.inspect(ctx, c.ID)
		if err != nil {
			return err
		}
		if ok {
			next[r.ID] = r
		}
	}
	w.mu.Lock()
	w.replicas = next
	w.synced = true
	w.mu.Unlock()
	w.changed()
	return nil
}

// candidate cheaply filters the list: a nullnet label or a name from the config.
func (w *Watcher) candidate(labels map[string]string, names []string) bool {
	if _, ok := labels[LabelService]; ok {
		return true
	}
	for _, n := range names {
		if _, ok := w.namedSpec(strings.TrimPrefix(n, "/")); ok {
			return true
		}
	}
	return false
}

func (w *Watcher) apply(ctx context.Context, m events.Message) {
	id := m.Actor.ID
	switch m.Action {
	case events.ActionDestroy:
		w.remove(id, true)
	case events.ActionStart, events.ActionDie, events.ActionPause, events.ActionUnPause,
		events.ActionRestart, events.ActionRename, events.ActionConnect, events.ActionDisconnect:
		if !w.candidate(m.Actor.Attributes, []string{m.Actor.Attributes["name"]}) {
			return // event attributes carry the container's labels and name
		}
		r, ok, err := w.inspect(ctx, id)
		if err != nil {
			w.logger.Debug("inspecting a container after an event failed", "id", short(id), "error", err)
			return
		}
		if !ok {
			w.remove(id, false) // keeps the bad-label warning mark: one warning per container
			return
		}
		w.mu.Lock()
		prev, had := w.replicas[id]
		w.replicas[id] = r
		w.mu.Unlock()
		if !had || !equal(prev, r) {
			w.changed()
		}
	}
}

// remove drops a container from the set; forget (destroyed) also drops its warning mark.
func (w *Watcher) remove(id string, forget bool) {
	w.mu.Lock()
	_, had := w.replicas[id]
	delete(w.replicas, id)
	if forget {
		delete(w.warned, id)
	}
	w.mu.Unlock()
	if had {
		w.changed()
	}
}

// inspect reads one container; ok is false when it is not a (usable) replica or is gone.
func (w *Watcher) inspect(ctx context.Context, id string) (Replica, bool, error) {
	res, err := w.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "no such container") {
			return Replica{}, false, nil
		}
		return Replica{}, false, fmt.Errorf("inspecting container %s: %w", short(id), err)
	}
	c := res.Container
	name := strings.TrimPrefix(c.Name, "/")
	spec, ok := w.namedSpec(name)
	if !ok {
		var labels map[string]string
		if c.Config != nil {
			labels = c.Config.Labels
		}
		var perr error
		spec, ok, perr = ParseLabels(labels)
		if perr != nil {
			w.mu.Lock()
			first := !w.warned[c.ID]
			w.warned[c.ID] = true
			w.mu.Unlock()
			if first {
				w.logger.Warn("container skipped: bad nullnet labels", "container", name, "id", short(c.ID), "error", perr)
			}
			return Replica{}, false, nil
		}
		if !ok {
			return Replica{}, false, nil
		}
	}
	r := Replica{ID: c.ID, Name: name, Spec: spec, State: StateExited}
	if c.State != nil {
		switch c.State.Status {
		case container.StateRunning:
			r.State = StateRunning
		case container.StatePaused:
			r.State = StatePaused
		}
		if r.State != StateExited {
			r.PID = c.State.Pid
		}
	}
	if c.NetworkSettings != nil && r.State != StateExited {
		for n, ep := range c.NetworkSettings.Networks {
			if ep == nil {
				continue
			}
			if ep.IPAddress.IsValid() {
				if r.Addresses == nil {
					r.Addresses = map[string]netip.Addr{}
				}
				r.Addresses[n] = ep.IPAddress
			} else if ep.GlobalIPv6Address.IsValid() {
				if r.Addresses == nil {
					r.Addresses = map[string]netip.Addr{}
				}
				r.Addresses[n] = ep.GlobalIPv6Address
			}
		}
	}
	return r, true, nil
}

func (w *Watcher) changed() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func equal(a, b Replica) bool {
	if a.ID != b.ID || a.Name != b.Name || a.Spec != b.Spec || a.State != b.State || a.PID != b.PID || len(a.Addresses) != len(b.Addresses) {
		return false
	}
	for k, v := range a.Addresses {
		if b.Addresses[k] != v {
			return false
		}
	}
	return true
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
