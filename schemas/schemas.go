package schemas

import (
	"embed"
	"io/fs"

	"github.com/vigil-dev/vigil/events"
)

// BaseURI is the prefix of every schema's $id: a schema's $id is BaseURI
// followed by its file name.
const BaseURI = "https://vigil.dev/schemas/"

// Schema file names, one per message type.
const (
	// SiteChangeV1 is the schema of events.SiteChange.
	SiteChangeV1 = "site_change.v1.json"
	// CheckCommandV1 is the schema of events.CheckCommand.
	CheckCommandV1 = "check_command.v1.json"
	// CheckBatchV1 is the schema of events.CheckBatch. Its commands are
	// check commands, referred to by $ref to CheckCommandV1, so a validator
	// needs both files.
	CheckBatchV1 = "check_batch.v1.json"
	// ObservationV1 is the schema of events.Observation.
	ObservationV1 = "observation.v1.json"
	// SiteEventV1 is the schema of events.SiteEvent.
	SiteEventV1 = "site_event.v1.json"
	// RegionEventV1 is the schema of events.RegionEvent.
	RegionEventV1 = "region_event.v1.json"
)

// files holds the schema files. An embed.FS is read-only.
//
//go:embed *.json
var files embed.FS

// Files returns the schema files, each at the top level under its name.
func Files() fs.FS { return files }

// ForType returns the name of the schema file that describes the data of the
// CloudEvents type ceType, and false for a type Vigil does not publish.
func ForType(ceType string) (name string, ok bool) {
	switch ceType {
	case events.TypeSiteCreated, events.TypeSiteUpdated, events.TypeSitePaused,
		events.TypeSiteResumed, events.TypeSiteDeleted:
		return SiteChangeV1, true
	case events.TypeCheckCommand:
		return CheckCommandV1, true
	case events.TypeCheckBatch:
		return CheckBatchV1, true
	case events.TypeObservation:
		return ObservationV1, true
	case events.TypeSeemsDown, events.TypeDown, events.TypeRecovered,
		events.TypeTLSExpiring, events.TypeTLSExpired, events.TypeTLSRenewed:
		return SiteEventV1, true
	case events.TypeRegionImpaired, events.TypeRegionRecovered:
		return RegionEventV1, true
	}
	return "", false
}
