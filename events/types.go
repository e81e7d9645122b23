package events

// CloudEvents type attributes of every message Vigil publishes. The suffix is
// the payload's schema version: a change that could break a consumer gets a new
// type (…v2), published alongside the old one until consumers have moved.
const (
	TypeSiteCreated = "dev.vigil.site.config.created.v1"
	TypeSiteUpdated = "dev.vigil.site.config.updated.v1"
	TypeSitePaused  = "dev.vigil.site.config.paused.v1"
	TypeSiteResumed = "dev.vigil.site.config.resumed.v1"
	TypeSiteDeleted = "dev.vigil.site.config.deleted.v1"

	TypeCheckCommand = "dev.vigil.check.command.v1"
	TypeCheckBatch   = "dev.vigil.check.batch.v1"
	TypeObservation  = "dev.vigil.check.observation.v1"

	TypeSeemsDown   = "dev.vigil.site.seems_down.v1"
	TypeDown        = "dev.vigil.site.down.v1"
	TypeRecovered   = "dev.vigil.site.recovered.v1"
	TypeTLSExpiring = "dev.vigil.site.tls_expiring.v1"
	TypeTLSExpired  = "dev.vigil.site.tls_expired.v1"
	TypeTLSRenewed  = "dev.vigil.site.tls_renewed.v1"

	TypeRegionImpaired  = "dev.vigil.region.impaired.v1"
	TypeRegionRecovered = "dev.vigil.region.recovered.v1"
)

// CloudEvents source attributes. They name the role that produced a message,
// not the instance: a derived event must be byte-identical whichever instance
// derives it. The instance is in the payload where it matters (checker_id).
const (
	SourceRegistry     = "/vigil/registry"
	SourceScheduler    = "/vigil/scheduler"
	SourceStateMachine = "/vigil/statemachine"
)

// SourceChecker is the source of a region's checkers: /vigil/checker/<region>.
func SourceChecker(region string) string { return "/vigil/checker/" + region }
