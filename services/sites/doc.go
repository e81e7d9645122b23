// Package sites is Vigil's site registry: the validation and normalization of
// site configurations, the YAML site file, maintenance-window schedules, and
// the Registry that reads and writes configurations on the SITES stream.
//
// A site's configuration is an event: every change (created, updated, paused,
// resumed, deleted) is one events.SiteChange on the site's subject
// events.SiteSubject(id), carrying the complete configuration after the change.
// The last message on the subject is therefore the current configuration and
// the earlier ones are its audit history; there is no other copy to keep in
// step.
//
// Writes use optimistic concurrency on the site's subject: each change says
// which sequence it was based on, and the server refuses it (ErrConflict) if
// the subject moved on meanwhile, so two operators or two API instances can
// never silently overwrite each other's edits.
//
// Every configuration is stored in its normalized form (Normalize): defaults
// filled in, sets sorted, empty collections nil. Two configurations that mean
// the same thing are therefore equal, which is what lets `vigil sites apply`
// publish nothing when a file is applied twice.
package sites
