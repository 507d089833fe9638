package agent

import (
	"fmt"
	"net/http"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/go-metrics/prometheus"
	"github.com/nullnet/nullnet/config"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the process-wide go-metrics setup: an in-memory sink for JSON and a Prometheus sink.
type Metrics struct {
	inm      *metrics.InmemSink
	registry *prom.Registry
}

// NewMetrics installs the global go-metrics instance, as Consul does: every package reports
// through the package-level functions of go-metrics.
func NewMetrics(cfg config.Telemetry, node string) (*Metrics, error) {
	inm := metrics.NewInmemSink(10*time.Second, time.Minute)
	sinks := metrics.FanoutSink{inm}
	m := &Metrics{inm: inm, registry: prom.NewRegistry()}
	// Process and Go runtime figures are always there, even before nullnet reports anything.
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.PrometheusRetentionTime > 0 {
		ps, err := prometheus.NewPrometheusSinkFrom(prometheus.PrometheusOpts{
			Expiration: cfg.PrometheusRetentionTime, Registerer: m.registry})
		if err != nil {
			return nil, fmt.Errorf("telemetry: prometheus sink: %w", err)
		}
		sinks = append(sinks, ps)
	}
	if cfg.StatsdAddress != "" {
		s, err := metrics.NewStatsdSink(cfg.StatsdAddress)
		if err != nil {
			return nil, fmt.Errorf("telemetry: statsd sink %s: %w", cfg.StatsdAddress, err)
		}
		sinks = append(sinks, s)
	}
	mc := metrics.DefaultConfig("")
	mc.EnableHostname = !cfg.DisableHostname
	mc.HostName = node
	mc.EnableRuntimeMetrics = true
	mc.EnableServiceLabel = false
	if _, err := metrics.NewGlobal(mc, sinks); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return m, nil
}

// ServeHTTP answers /v1/agent/metrics: JSON from the in-memory sink, or the Prometheus text
// format with ?format=prometheus.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("format") == "prometheus" {
		promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return
	}
	data, err := m.inm.DisplayMetrics(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, data)
}
