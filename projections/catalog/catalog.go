// Package catalog lists Vigil's projections, so that a projector process, a
// rebuild command and the tests all run the same set.
package catalog

import (
	"github.com/vigil-dev/vigil/projections/incidents"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/sitestatus"
	"github.com/vigil-dev/vigil/projections/uptime"
)

// Config configures the projections that take settings.
type Config struct {
	Uptime uptime.Config
	Outbox outbox.Config
}

// All returns every projection: site_status, incidents, uptime and the
// notification outbox.
func All(cfg Config) []projector.Projection {
	return []projector.Projection{
		sitestatus.New(),
		incidents.New(),
		uptime.New(cfg.Uptime),
		outbox.New(cfg.Outbox),
	}
}

// Names returns the names of All's projections.
func Names() []string {
	return []string{sitestatus.Name, incidents.Name, uptime.Name, outbox.Name}
}
