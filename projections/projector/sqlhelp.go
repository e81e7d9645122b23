package projector

import (
	"strings"

	"github.com/vigil-dev/vigil/projections/store"
)

// SeqColumn is the column in which rows remember the stream sequence of the
// last event that changed them.
const SeqColumn = "last_event_seq"

// Upsert builds an insert of cols into table that, on a conflict on key,
// applies the assignments instead (built with Guarded and GuardSeq, or by
// hand with d.Excluded).
func Upsert(d store.Dialect, table string, key, cols []string, assigns ...string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(table)
	b.WriteString(" (")
	b.WriteString(strings.Join(cols, ", "))
	b.WriteString(") VALUES (?")
	b.WriteString(strings.Repeat(", ?", len(cols)-1))
	b.WriteString(") ")
	b.WriteString(d.OnConflict(key...))
	b.WriteString(" ")
	b.WriteString(strings.Join(assigns, ", "))
	return b.String()
}

// Guarded assigns expr to col only if the proposed row comes from a later
// event than the stored one, so re-applying an old event changes nothing.
// An empty expr means the proposed value of col.
func Guarded(d store.Dialect, col, expr string) string {
	if expr == "" {
		expr = d.Excluded(col)
	}
	return col + " = CASE WHEN " + SeqColumn + " < " + d.Excluded(SeqColumn) + " THEN " + expr + " ELSE " + col + " END"
}

// GuardedBy is Guarded with another guard column.
func GuardedBy(d store.Dialect, guard, col, expr string) string {
	if expr == "" {
		expr = d.Excluded(col)
	}
	return col + " = CASE WHEN " + guard + " < " + d.Excluded(guard) + " THEN " + expr + " ELSE " + col + " END"
}

// GuardedAll is Guarded for several columns, each taking its proposed value.
func GuardedAll(d store.Dialect, cols ...string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = Guarded(d, c, "")
	}
	return out
}

// GuardSeq is the last assignment of a guarded upsert: it moves the row's
// sequence forward. It must come last, because MySQL evaluates the
// assignments in order and the guards above read the old value.
func GuardSeq(d store.Dialect) string {
	return SeqColumn + " = " + d.Greatest(SeqColumn, d.Excluded(SeqColumn))
}
