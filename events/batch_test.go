package events

import (
	"testing"
	"time"
)

func TestCheckBatchSubject(t *testing.T) {
	id := DeriveID(time.Unix(1, 0), "b")
	if got, want := CheckBatchSubject("eu", id), "vigil.checks.eu.batch."+id; got != want {
		t.Errorf("CheckBatchSubject = %s, want %s", got, want)
	}
	for subject, want := range map[string]bool{
		CheckBatchSubject("eu", id):     true,
		CheckBatchSubject("batch", id):  true, // a region may be called batch
		CheckSubject("eu", "shop-eu"):   false,
		CheckSubject("batch", "batch"):  false, // vigil.checks.batch.<bucket>.batch
		"vigil.checks.eu.batch":         false,
		"vigil.obs.3.batch." + id:       false,
		"vigil.checks.eu.batchy." + id:  false,
		"vigil.checks.eu.12.batch-site": false,
	} {
		if got := IsCheckBatchSubject(subject); got != want {
			t.Errorf("IsCheckBatchSubject(%q) = %v, want %v", subject, got, want)
		}
	}
}

// A batch's ID depends on its region and its commands, in order, and its
// envelope's time is its earliest command's due time.
func TestCheckBatchIDAndEnvelope(t *testing.T) {
	b := benchCheckBatch(3)
	again := benchCheckBatch(3)
	if b.ID != again.ID {
		t.Errorf("the same batch has IDs %s and %s", b.ID, again.ID)
	}
	env := b.Envelope()
	if env.Type != TypeCheckBatch || env.Subject != "eu" || env.NATSSubject != CheckBatchSubject("eu", b.ID) ||
		!env.Time.Equal(b.Commands[0].DueAt) {
		t.Errorf("envelope %+v", env)
	}
	if at, err := IDTime(b.ID); err != nil || !at.Equal(b.Commands[0].DueAt.Truncate(time.Millisecond)) {
		t.Errorf("ID time %v (%v), want the earliest due time %v", at, err, b.Commands[0].DueAt)
	}
	swapped := []CheckCommand{b.Commands[1], b.Commands[0], b.Commands[2]}
	for name, other := range map[string]string{
		"another region": BatchID("us", env.Time, b.Commands),
		"another order":  BatchID("eu", env.Time, swapped),
		"one fewer":      BatchID("eu", env.Time, b.Commands[:2]),
	} {
		if other == b.ID {
			t.Errorf("%s gives the same batch ID", name)
		}
	}
}
