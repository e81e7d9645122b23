package sites

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/vigil-dev/vigil/events"
)

// Action is what applying a site file does to one site.
type Action string

// Actions of a plan.
const (
	ActionCreate    Action = "create"
	ActionUpdate    Action = "update"
	ActionDelete    Action = "delete"
	ActionUnchanged Action = "unchanged"
)

// Step is the plan for one site.
type Step struct {
	Action Action
	// Site is the normalized desired configuration, or for a delete the
	// site's current configuration.
	Site events.Site
	// Seq is the sequence of the site's last change, which the change must
	// still find when it is applied; 0 for a site that never existed.
	Seq uint64
	// Paused is the paused flag the change keeps (apply never pauses or
	// resumes a site).
	Paused bool
	// Recreate is set on a create of a previously deleted ID.
	Recreate bool
	// MatchedByURL is set when the file gave no ID and the site was matched
	// to the one existing site with the same URL.
	MatchedByURL bool
	// Changed lists the fields an update changes, by YAML name.
	Changed []string
	// Index is the site's position in the desired list; -1 for a delete.
	Index int
}

// Plan is what applying a list of sites would change, computed against the
// registry's state at one moment. Steps are in the list's order, then the
// deletes sorted by ID.
type Plan struct {
	Steps []Step
}

// Count returns how many steps have action a.
func (p Plan) Count(a Action) int {
	n := 0
	for _, s := range p.Steps {
		if s.Action == a {
			n++
		}
	}
	return n
}

// Empty reports whether applying the plan would publish nothing.
func (p Plan) Empty() bool {
	return p.Count(ActionUnchanged) == len(p.Steps)
}

// Result is what ApplyPlan did.
type Result struct {
	Created, Updated, Deleted, Unchanged int
	// Published holds the state after each change that was published, in
	// order.
	Published []Current
}

// Plan computes the declarative sync of a site list (a site file) against
// the registry, as `vigil sites apply` does:
//
//   - Every desired site is normalized first; if any is invalid the whole
//     list is refused with every bad site named, and the plan is empty.
//   - A site without an ID is matched to the existing (not deleted) site
//     with the same URL, provided exactly one has it and the list does not
//     name that site by ID; with none it gets a new ULID. Two sites without
//     IDs with the same URL, or a URL shared by several existing sites, are
//     refused: they could not be matched again on the next apply, and each
//     apply would create more copies.
//   - A site that does not exist, or was deleted, is created; one whose
//     normalized configuration differs is updated; the rest are unchanged.
//   - With prune, every existing site the list does not name is deleted.
//
// Applying the same list twice therefore publishes nothing the second time.
// Paused flags are not part of the file: an updated site keeps its own.
func (r *Registry) Plan(ctx context.Context, desired []events.Site, prune bool) (Plan, error) {
	want, err := NormalizeAll(desired)
	if err != nil {
		return Plan{}, err
	}
	existing, err := r.List(ctx, IncludeDeleted())
	if err != nil {
		return Plan{}, fmt.Errorf("read current sites: %w", err)
	}
	byID := make(map[string]Current, len(existing))
	for _, c := range existing {
		byID[c.Site.ID] = c
	}
	named := make(map[string]bool, len(want))
	for _, s := range want {
		if s.ID != "" {
			named[s.ID] = true
		}
	}
	byURL := map[string][]string{}
	for _, c := range existing {
		if !c.Deleted && !named[c.Site.ID] {
			byURL[c.Site.URL] = append(byURL[c.Site.URL], c.Site.ID)
		}
	}

	var errs []error
	matched := make([]bool, len(want))
	idless := map[string]int{}
	for i := range want {
		s := &want[i]
		if s.ID != "" {
			continue
		}
		if j, dup := idless[s.URL]; dup {
			errs = append(errs, &FieldError{Index: i, Field: "id", Reason: fmt.Sprintf("sites[%d] has the same URL and no id either: give each an id so apply can tell them apart", j)})
			continue
		}
		idless[s.URL] = i
		switch ids := byURL[s.URL]; len(ids) {
		case 0:
			id, err := r.ids.New(r.now())
			if err != nil {
				return Plan{}, err
			}
			s.ID = id
		case 1:
			s.ID = ids[0]
			matched[i] = true
		default:
			errs = append(errs, &FieldError{Index: i, Field: "id", Reason: fmt.Sprintf("%d existing sites have this URL (%s): give the site an id to say which", len(ids), strings.Join(ids, ", "))})
		}
	}
	if len(errs) > 0 {
		return Plan{}, errors.Join(errs...)
	}

	var p Plan
	for i, s := range want {
		step := Step{Site: s, Index: i, MatchedByURL: matched[i]}
		cur, ok := byID[s.ID]
		switch {
		case !ok:
			step.Action = ActionCreate
		case cur.Deleted:
			step.Action, step.Seq, step.Recreate = ActionCreate, cur.Seq, true
		case SameConfig(cur.Site, s):
			step.Action, step.Seq, step.Paused = ActionUnchanged, cur.Seq, cur.Paused
		default:
			step.Action, step.Seq, step.Paused = ActionUpdate, cur.Seq, cur.Paused
			step.Changed = ChangedFields(cur.Site, s)
		}
		p.Steps = append(p.Steps, step)
	}
	if prune {
		wanted := make(map[string]bool, len(want))
		for _, s := range want {
			wanted[s.ID] = true
		}
		for _, c := range existing { // sorted by ID
			if !c.Deleted && !wanted[c.Site.ID] {
				p.Steps = append(p.Steps, Step{Action: ActionDelete, Site: c.Site, Seq: c.Seq, Paused: c.Paused, Index: -1})
			}
		}
	}
	return p, nil
}

// ApplyPlan publishes the changes of a plan, each expecting the site to be
// where the plan found it. If a site changed since the plan was made, that
// step fails with ErrConflict and ApplyPlan stops there: the changes already
// published stay (each is a complete configuration), and planning again from
// the new state and applying converges. The Result counts what was done up
// to the error.
func (r *Registry) ApplyPlan(ctx context.Context, p Plan) (Result, error) {
	var res Result
	for _, step := range p.Steps {
		var (
			cur Current
			err error
		)
		switch step.Action {
		case ActionUnchanged:
			res.Unchanged++
			continue
		case ActionCreate, ActionUpdate:
			// Plans are plain values; refuse one edited into an invalid
			// state rather than publish it.
			n, nerr := Normalize(step.Site)
			if nerr == nil && n.ID == "" {
				nerr = &FieldError{Index: step.Index, Field: "id", Reason: "is required in a plan"}
			}
			if nerr != nil {
				return res, nerr
			}
			kind, paused := events.ChangeCreated, false
			if step.Action == ActionUpdate {
				kind, paused = events.ChangeUpdated, step.Paused
			}
			cur, err = r.publish(ctx, kind, n, paused, step.Seq)
		case ActionDelete:
			if verr := events.ValidateSiteID(step.Site.ID); verr != nil {
				return res, &FieldError{Site: step.Site.ID, Index: -1, Field: "id", Reason: verr.Error()}
			}
			cur, err = r.publish(ctx, events.ChangeDeleted, step.Site, step.Paused, step.Seq)
		default:
			return res, fmt.Errorf("plan step for %s has unknown action %q", step.Site.ID, step.Action)
		}
		if err != nil {
			return res, fmt.Errorf("%s %s: %w", step.Action, step.Site.ID, err)
		}
		res.Published = append(res.Published, cur)
		switch step.Action {
		case ActionCreate:
			res.Created++
		case ActionUpdate:
			res.Updated++
		case ActionDelete:
			res.Deleted++
		}
	}
	return res, nil
}

// SameConfig reports whether two normalized configurations are the same. It
// compares their JSON encodings, the form in which they are stored, so
// representation details that do not survive storage (a time's location
// pointer, a nil versus an empty map) cannot make equal configurations look
// different.
func SameConfig(a, b events.Site) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// ChangedFields lists the fields in which two configurations differ, by their
// YAML names, in the order of events.Site.
func ChangedFields(a, b events.Site) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
	var out []string
	for i := range t.NumField() {
		ja, _ := json.Marshal(va.Field(i).Interface())
		jb, _ := json.Marshal(vb.Field(i).Interface())
		if !bytes.Equal(ja, jb) {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			out = append(out, name)
		}
	}
	return slices.Clip(out)
}
