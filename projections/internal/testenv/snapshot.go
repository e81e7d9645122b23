package testenv

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/projections/store"
)

// Snapshot returns a table's rows as sorted, normalised strings (times in UTC
// with milliseconds, whichever store), leaving out the named columns.
func Snapshot(t testing.TB, db *store.DB, table string, skip ...string) []string {
	t.Helper()
	rows, err := db.W.QueryContext(context.Background(), "SELECT * FROM "+table)
	if err != nil {
		t.Fatalf("snapshot %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, c := range cols {
			if slices.Contains(skip, c) {
				continue
			}
			fmt.Fprintf(&b, "%s=%s ", c, norm(vals[i]))
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func norm(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case time.Time:
		return x.UTC().Format(store.TimeLayout)
	case []byte:
		return norm(string(x))
	case string:
		var st store.Time
		if len(x) == len(store.TimeLayout) && st.Scan(x) == nil {
			return st.Time.Format(store.TimeLayout)
		}
		return fmt.Sprintf("%q", x)
	case int64, int32, int:
		return fmt.Sprint(x)
	case uint64:
		return fmt.Sprint(x)
	case float64:
		return fmt.Sprint(x)
	}
	return fmt.Sprintf("%v", v)
}

// Diff reports the first differences between two snapshots.
func Diff(a, b []string) string {
	var out []string
	ma := map[string]int{}
	for _, s := range a {
		ma[s]++
	}
	for _, s := range b {
		if ma[s] > 0 {
			ma[s]--
			continue
		}
		out = append(out, "+ "+s)
	}
	for s, n := range ma {
		for ; n > 0; n-- {
			out = append(out, "- "+s)
		}
	}
	slices.Sort(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("... %d more", len(out)-10))
	}
	return strings.Join(out, "\n")
}
