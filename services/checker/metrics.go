package checker

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the checker's Prometheus metrics. Every one carries the region
// as a constant label, so checkers of several regions can share a registry
// (vigil dev runs one per region).
type metrics struct {
	checks        *prometheus.CounterVec // by class
	lateness      prometheus.Observer
	inFlight      prometheus.Gauge
	poolSize      prometheus.Gauge
	expired       prometheus.Counter
	poison        prometheus.Counter
	batches       prometheus.Counter
	pullStalls    prometheus.Counter
	publishErrors prometheus.Counter
	duration      *prometheus.HistogramVec // by outcome
}

func newMetrics(reg prometheus.Registerer, region string) (*metrics, error) {
	l := prometheus.Labels{"region": region}
	var m metrics
	var err error
	if m.checks, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "vigil_checker_checks_total",
		Help:        "Observations published, by result class (command_expired included).",
		ConstLabels: l,
	}, []string{"class"})); err != nil {
		return nil, err
	}
	var lateness prometheus.Histogram
	if lateness, err = register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "vigil_checker_lateness_seconds",
		Help:        "How late checks start: start time minus the command's due time.",
		ConstLabels: l,
		Buckets:     []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	})); err != nil {
		return nil, err
	}
	m.lateness = lateness
	if m.inFlight, err = register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vigil_checker_in_flight",
		Help:        "Commands being processed: checked, published or acknowledged.",
		ConstLabels: l,
	})); err != nil {
		return nil, err
	}
	if m.poolSize, err = register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vigil_checker_pool_size",
		Help:        "Worker goroutines taking commands, as sized by the controller.",
		ConstLabels: l,
	})); err != nil {
		return nil, err
	}
	if m.expired, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "vigil_checker_commands_expired_total",
		Help:        "Commands past their deadline when taken, reported as command_expired without a check.",
		ConstLabels: l,
	})); err != nil {
		return nil, err
	}
	if m.poison, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "vigil_checker_poison_total",
		Help:        "Commands that could not be decoded or acted on, terminated with a reason.",
		ConstLabels: l,
	})); err != nil {
		return nil, err
	}
	if m.batches, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "vigil_checker_batches_total",
		Help:        "Batch messages (several commands in one message) taken; their commands count in the other metrics as commands.",
		ConstLabels: l,
	})); err != nil {
		return nil, err
	}
	if m.pullStalls, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "vigil_checker_pull_stalls_total",
		Help:        "Times the command pull went quiet (missed heartbeats) and was re-issued.",
		ConstLabels: l,
	})); err != nil {
		return nil, err
	}
	if m.publishErrors, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "vigil_checker_publish_errors_total",
		Help:        "Observations that could not be published; their commands are checked again.",
		ConstLabels: l,
	})); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "vigil_checker_check_duration_seconds",
		Help:        "How long checks take, by outcome (ok or fail); only ok sizes the worker pool.",
		ConstLabels: l,
		Buckets:     []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"outcome"})); err != nil {
		return nil, err
	}
	return &m, nil
}

// register registers c, or returns the collector already registered under
// the same name and labels, so two Checkers of one region in one process
// share their metrics (gauges are only ever added to, never set).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		var zero C
		return zero, fmt.Errorf("checker: register metrics: %w", err)
	}
	return c, nil
}
