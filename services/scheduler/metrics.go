package scheduler

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
)

// metrics are the scheduler's Prometheus metrics.
type metrics struct {
	targets   prometheus.Gauge
	owned     prometheus.Gauge
	published *prometheus.CounterVec
	missed    prometheus.Counter
	errors    prometheus.Counter
	lag       prometheus.Histogram
	// perMessage is the commands per acknowledged CHECKS message.
	perMessage prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		targets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_scheduler_targets",
			Help: "Sites being scheduled (active sites of the owned buckets).",
		}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_scheduler_buckets_owned",
			Help: "Buckets this scheduler instance holds the lease of.",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_scheduler_commands_published_total",
			Help: "Check commands acknowledged by CHECKS, by purpose.",
		}, []string{"purpose"}),
		missed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_scheduler_commands_missed_total",
			Help: "Due checks not sent because their deadline passed first (scheduler stalled, publishing failed).",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_scheduler_publish_errors_total",
			Help: "Failed check command publishes (each is retried while before its deadline).",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_scheduler_publish_lag_seconds",
			Help:    "Time from a command's due instant to its (successful) publish.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		perMessage: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_scheduler_commands_per_message",
			Help:    "Check commands per CHECKS message acknowledged (1 for a command sent alone, more for a batch).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
		}),
	}
	for _, p := range []events.Purpose{events.PurposeScheduled, events.PurposeRetry} {
		m.published.WithLabelValues(string(p))
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.targets, m.owned, m.published, m.missed, m.errors, m.lag, m.perMessage} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("scheduler metrics already registered: one scheduler per registry")
			}
			return nil, err
		}
	}
	return m, nil
}
