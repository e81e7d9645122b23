package statemachine

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	observations  *prometheus.CounterVec
	events        *prometheus.CounterVec
	verifications prometheus.Counter
	appendErrors  prometheus.Counter
	errors        prometheus.Counter
	buckets       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		observations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_statemachine_observations_total",
			Help: "Observations handled, by result: applied, uneventful (a site with no state, and nothing in the observation that could change it), ignored (unknown or deleted site), poison (quarantined), given_up (effects failed 20 times in a row).",
		}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_statemachine_events_total",
			Help: "Events appended to EVENTS, by kind.",
		}, []string{"kind"}),
		verifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_statemachine_verification_commands_total",
			Help: "Verification commands sent to other regions.",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_statemachine_append_errors_total",
			Help: "Event appends that failed, conflicts included.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_statemachine_effect_errors_total",
			Help: "Observations whose effects could not all be made durable (redelivered).",
		}),
		buckets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_statemachine_buckets_owned",
			Help: "Buckets this instance works on.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.observations, m.events, m.verifications, m.appendErrors, m.errors, m.buckets} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("statemachine: register metrics: %w", err)
		}
	}
	return m, nil
}
