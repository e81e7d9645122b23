package schemas_test

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/schemas"
)

// allSchemaNames lists the schema files the package must hold, one per
// message type.
func allSchemaNames() []string {
	return []string{
		schemas.SiteChangeV1,
		schemas.CheckCommandV1,
		schemas.CheckBatchV1,
		schemas.ObservationV1,
		schemas.SiteEventV1,
		schemas.RegionEventV1,
	}
}

// ---------------------------------------------------------------------------
// Samples. Full samples populate every field with a non-zero value, so no
// omitempty field is dropped; minimal samples set only the fields whose json
// tag has no omitempty.

const sampleSite = "blog-42" // events.Bucket(sampleSite) is not 0

func t0() time.Time { return time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC) }

func dur(d time.Duration) events.Duration { return events.Duration(d) }

func ulid(parts ...string) string { return events.DeriveID(t0(), parts...) }

func fullSite() events.Site {
	start := time.Date(2025, 4, 1, 2, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	verify := false
	return events.Site{
		ID:                sampleSite,
		URL:               "https://blog.example.com/health?probe=1",
		Interval:          dur(5 * time.Minute),
		Timeout:           dur(10 * time.Second),
		Method:            "GET",
		Headers:           map[string]string{"User-Agent": "Vigil", "X-Token": "secret"},
		ExpectStatus:      []int{200, 204},
		Keywords:          []string{"Welcome"},
		ForbiddenKeywords: []string{"Fatal error"},
		Redirects:         events.RedirectAlert,
		TLSVerify:         &verify,
		RetryInterval:     dur(30 * time.Second),
		ConfirmAfter:      3,
		RecoverAfter:      2,
		Quorum:            2,
		Regions:           []string{"eu-west", "us-east"},
		Maintenance: []events.MaintenanceWindow{
			{Start: &start, Cron: "0 3 * * 0", Duration: dur(90 * time.Minute)},
		},
		Labels: map[string]string{"team": "web", "tier": "gold"},
	}
}

func fullSiteChange(kind events.ChangeKind) *events.SiteChange {
	return &events.SiteChange{
		ID:     ulid("change", string(kind)),
		Change: kind,
		At:     t0(),
		Actor:  "api:key-1",
		Paused: true,
		Site:   fullSite(),
	}
}

func minimalSiteChange() *events.SiteChange {
	return &events.SiteChange{
		ID:     ulid("change", "minimal"),
		Change: events.ChangeCreated,
		At:     t0(),
		Site:   events.Site{ID: "01JPB7ZQ3M8X6V5R4T2W1Y0K9N", URL: "http://example.org"},
	}
}

func fullCheckCommand() *events.CheckCommand {
	due := t0()
	return &events.CheckCommand{
		ID:         events.CommandID(sampleSite, "eu-west", events.PurposeVerify, due),
		SiteID:     sampleSite,
		Bucket:     events.Bucket(sampleSite),
		Region:     "eu-west",
		Purpose:    events.PurposeVerify,
		DueAt:      due,
		Deadline:   due.Add(4 * time.Minute),
		IncidentID: ulid("incident"),
		ConfigSeq:  1 << 40,
		Check: events.CheckSpec{
			URL:               "https://blog.example.com/health",
			Method:            "GET",
			Timeout:           dur(1500 * time.Millisecond),
			Headers:           map[string]string{"User-Agent": "Vigil"},
			ExpectStatus:      []int{200},
			Keywords:          []string{"Welcome"},
			ForbiddenKeywords: []string{"Fatal error"},
			Redirects:         events.RedirectAlert,
			TLSVerify:         true,
			LastRedirectChain: []string{"https://www.blog.example.com/health"},
		},
	}
}

func minimalCheckCommand() *events.CheckCommand {
	due := t0()
	return &events.CheckCommand{
		ID:        events.CommandID(sampleSite, "us-east", events.PurposeScheduled, due),
		SiteID:    sampleSite,
		Bucket:    events.Bucket(sampleSite),
		Region:    "us-east",
		Purpose:   events.PurposeScheduled,
		DueAt:     due,
		Deadline:  due.Add(5 * time.Minute),
		ConfigSeq: 7,
		Check: events.CheckSpec{
			URL:       "https://blog.example.com/",
			Method:    "HEAD",
			Timeout:   dur(10 * time.Second),
			Redirects: events.RedirectFollow,
		},
	}
}

// fullCheckBatch is a batch of two full commands of one region: fullCheckCommand
// and a retry of another site due a little later.
func fullCheckBatch() *events.CheckBatch {
	first := fullCheckCommand()
	second := fullCheckCommand()
	second.SiteID = "shop-7"
	second.Bucket = events.Bucket(second.SiteID)
	second.Purpose = events.PurposeRetry
	second.DueAt = first.DueAt.Add(40 * time.Millisecond)
	second.Deadline = second.DueAt.Add(30 * time.Second)
	second.ID = events.CommandID(second.SiteID, second.Region, second.Purpose, second.DueAt)
	second.ConfigSeq = 99
	second.Check.URL = "https://shop.example.com/"
	second.Check.Method = "HEAD"
	commands := []events.CheckCommand{*first, *second}
	return &events.CheckBatch{
		ID:       events.BatchID(first.Region, first.DueAt, commands),
		Region:   first.Region,
		Commands: commands,
	}
}

// minimalCheckBatch is a batch of one minimal command.
func minimalCheckBatch() *events.CheckBatch {
	cmd := minimalCheckCommand()
	commands := []events.CheckCommand{*cmd}
	return &events.CheckBatch{
		ID:       events.BatchID(cmd.Region, cmd.DueAt, commands),
		Region:   cmd.Region,
		Commands: commands,
	}
}

func fullObservation() *events.Observation {
	return &events.Observation{
		ID:         ulid("observation", "full"),
		SiteID:     sampleSite,
		Bucket:     events.Bucket(sampleSite),
		Region:     "eu-west",
		CheckerID:  "checker-eu-west-3",
		CommandID:  ulid("command"),
		Purpose:    events.PurposeRetry,
		IncidentID: ulid("incident"),
		ConfigSeq:  12,
		DueAt:      t0(),
		StartedAt:  t0().Add(120 * time.Millisecond),
		Class:      events.ClassHTTPStatus,
		StatusCode: 503,
		Timings:    events.Timings{DNSMs: 1.5, ConnectMs: 12.25, TLSMs: 30, TTFBMs: 210.75, TotalMs: 260},
		FinalURL:   "https://www.blog.example.com/health",
		RedirectChain: []string{
			"https://www.blog.example.com/health",
		},
		TLS: &events.TLSInfo{
			Version:     "TLS 1.3",
			Issuer:      "CN=R11,O=Let's Encrypt,C=US",
			Subject:     "CN=blog.example.com",
			NotBefore:   t0().Add(-60 * 24 * time.Hour),
			NotAfter:    t0().Add(30 * 24 * time.Hour),
			ChainValid:  true,
			VerifyError: "x509: certificate signed by unknown authority",
		},
		Error: "unexpected status 503 Service Unavailable",
	}
}

func minimalObservation() *events.Observation {
	return &events.Observation{
		ID:        ulid("observation", "minimal"),
		SiteID:    sampleSite,
		Bucket:    events.Bucket(sampleSite),
		Region:    "us-east",
		CheckerID: "checker-1",
		CommandID: ulid("command"),
		Purpose:   events.PurposeScheduled,
		DueAt:     t0(),
		StartedAt: t0(),
		Class:     events.ClassOK,
	}
}

func fullSiteEvent(kind events.EventKind) *events.SiteEvent {
	started := t0().Add(-3 * time.Minute)
	notAfter := t0().Add(7 * 24 * time.Hour)
	days := 7
	return &events.SiteEvent{
		ID:             ulid("event", string(kind)),
		Kind:           kind,
		SiteID:         sampleSite,
		Bucket:         events.Bucket(sampleSite),
		At:             t0(),
		State:          events.StateDown,
		Severity:       events.SeverityDown,
		IncidentID:     ulid("incident"),
		StartedAt:      &started,
		Reason:         events.ReasonRecovered,
		FailureClass:   events.ClassHTTPStatus,
		FailureStatus:  503,
		ObservationIDs: []string{ulid("observation", "1"), ulid("observation", "2")},
		Votes: []events.RegionVote{{
			Region:        "us-east",
			Vote:          events.VoteDown,
			Class:         events.ClassHTTPStatus,
			StatusCode:    503,
			ObservationID: ulid("observation", "2"),
		}},
		SingleRegion: true,
		Maintenance:  true,
		CertNotAfter: &notAfter,
		CertDaysLeft: &days,
	}
}

func minimalSiteEvent() *events.SiteEvent {
	return &events.SiteEvent{
		ID:             ulid("event", "minimal"),
		Kind:           events.KindTLSRenewed,
		SiteID:         sampleSite,
		Bucket:         events.Bucket(sampleSite),
		At:             t0(),
		State:          events.StateUp,
		Severity:       events.SeverityUp,
		ObservationIDs: []string{ulid("observation", "1")},
	}
}

func fullRegionEvent(kind events.EventKind) *events.RegionEvent {
	return &events.RegionEvent{
		ID:       ulid("region", string(kind)),
		Kind:     kind,
		Region:   "ap-south",
		At:       t0(),
		Window:   dur(5 * time.Minute),
		Checks:   1200,
		Failures: 1100,
		Sites:    950,
	}
}

func minimalRegionEvent() *events.RegionEvent {
	// Every RegionEvent field is required; zero counts are valid.
	return &events.RegionEvent{
		ID:     ulid("region", "minimal"),
		Kind:   events.KindRegionRecovered,
		Region: "ap-south",
		At:     t0(),
		Window: dur(0),
	}
}

type sample struct {
	name    string
	msg     events.Message
	minimal bool
}

// samples returns a full sample of every message type and every kind, and a
// minimal sample of every message type.
func samples() []sample {
	var out []sample
	for _, k := range []events.ChangeKind{events.ChangeCreated, events.ChangeUpdated, events.ChangePaused, events.ChangeResumed, events.ChangeDeleted} {
		out = append(out, sample{name: "SiteChange/full/" + string(k), msg: fullSiteChange(k)})
	}
	out = append(out,
		sample{name: "SiteChange/minimal", msg: minimalSiteChange(), minimal: true},
		sample{name: "CheckCommand/full", msg: fullCheckCommand()},
		sample{name: "CheckCommand/minimal", msg: minimalCheckCommand(), minimal: true},
		sample{name: "CheckBatch/full", msg: fullCheckBatch()},
		sample{name: "CheckBatch/minimal", msg: minimalCheckBatch(), minimal: true},
		sample{name: "Observation/full", msg: fullObservation()},
		sample{name: "Observation/minimal", msg: minimalObservation(), minimal: true},
	)
	for _, k := range []events.EventKind{events.KindSeemsDown, events.KindDown, events.KindRecovered, events.KindTLSExpiring, events.KindTLSExpired, events.KindTLSRenewed} {
		out = append(out, sample{name: "SiteEvent/full/" + string(k), msg: fullSiteEvent(k)})
	}
	out = append(out, sample{name: "SiteEvent/minimal", msg: minimalSiteEvent(), minimal: true})
	for _, k := range []events.EventKind{events.KindRegionImpaired, events.KindRegionRecovered} {
		out = append(out, sample{name: "RegionEvent/full/" + string(k), msg: fullRegionEvent(k)})
	}
	out = append(out, sample{name: "RegionEvent/minimal", msg: minimalRegionEvent(), minimal: true})
	return out
}

// ---------------------------------------------------------------------------
// Schema loading and validation.

func readSchemaFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(schemas.Files(), name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

// schemaDoc returns a schema file decoded with encoding/json, for inspection.
func schemaDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(readSchemaFile(t, name), &doc); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return doc
}

// newCompiler returns a draft 2020-12 compiler that asserts formats
// (date-time, uri) and knows every schema file.
func newCompiler(t *testing.T, names ...string) *jsonschema.Compiler {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, name := range names {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(readSchemaFile(t, name)))
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		if err := c.AddResource(schemas.BaseURI+name, doc); err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
	}
	return c
}

// embeddedLoader serves the schema files to a compiler by their $id, from
// Files() alone: a $ref to anything else fails to compile. It records what it
// served.
type embeddedLoader struct {
	loaded []string
}

func (l *embeddedLoader) Load(url string) (any, error) {
	name, ok := strings.CutPrefix(url, schemas.BaseURI)
	if !ok {
		return nil, fmt.Errorf("%s is not a Vigil schema", url)
	}
	b, err := fs.ReadFile(schemas.Files(), name)
	if err != nil {
		return nil, err
	}
	l.loaded = append(l.loaded, name)
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// compileAll compiles every schema file, keyed by file name.
func compileAll(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := newCompiler(t, allSchemaNames()...)
	out := make(map[string]*jsonschema.Schema)
	for _, name := range allSchemaNames() {
		sch, err := c.Compile(schemas.BaseURI + name)
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		out[name] = sch
	}
	return out
}

// schemaFor returns the compiled schema of a message, chosen through ForType
// from the message's CloudEvents type.
func schemaFor(t *testing.T, all map[string]*jsonschema.Schema, m events.Message) (string, *jsonschema.Schema) {
	t.Helper()
	typ := m.Envelope().Type
	name, ok := schemas.ForType(typ)
	if !ok {
		t.Fatalf("ForType(%q) = false for a %T", typ, m)
	}
	sch, ok := all[name]
	if !ok {
		t.Fatalf("no compiled schema %s", name)
	}
	return name, sch
}

func validateJSON(sch *jsonschema.Schema, b []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("decode instance: %w", err)
	}
	return sch.Validate(inst)
}

func validateValue(t *testing.T, sch *jsonschema.Schema, v any) error {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return validateJSON(sch, b)
}

// asMap marshals a message with encoding/json and decodes it as generic JSON.
func asMap(t *testing.T, m events.Message) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %T: %v", m, err)
	}
	return out
}

// ---------------------------------------------------------------------------
// Reflection over json tags.

type jsonField struct {
	name     string
	optional bool // omitempty or omitzero: absent when zero
	index    int
	typ      reflect.Type
}

func jsonFields(t *testing.T, typ reflect.Type) []jsonField {
	t.Helper()
	var out []jsonField
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			t.Fatalf("%s.%s: embedded structs are not supported by this test", typ, f.Name)
		}
		if name == "" {
			name = f.Name
		}
		optional := false
		for _, o := range strings.Split(opts, ",") {
			if o == "omitempty" || o == "omitzero" {
				optional = true
			}
			if o == "string" {
				t.Fatalf("%s.%s: the ,string option is not supported by this test", typ, f.Name)
			}
		}
		out = append(out, jsonField{name: name, optional: optional, index: i, typ: f.Type})
	}
	return out
}

// isLeaf reports whether a type encodes as a JSON scalar or a free-form value
// rather than as an object of its own fields.
func isLeaf(typ reflect.Type) bool {
	if typ.Kind() != reflect.Struct {
		return true
	}
	return typ.Implements(reflect.TypeFor[json.Marshaler]()) ||
		typ.Implements(reflect.TypeFor[encoding.TextMarshaler]())
}

// nestedStruct returns the struct type a field holds (through pointers and
// slices) if it encodes as an object of its own fields.
func nestedStruct(typ reflect.Type) (st reflect.Type, isSlice, ok bool) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array {
		isSlice = true
		typ = typ.Elem()
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
	}
	if isLeaf(typ) {
		return nil, false, false
	}
	return typ, isSlice, true
}

// jsonType is the JSON Schema type a Go type encodes as.
func jsonType(typ reflect.Type) string {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ.Implements(reflect.TypeFor[json.Marshaler]()) || typ.Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
		return "string" // time.Time, events.Duration
	}
	switch typ.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Map, reflect.Struct:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return "unsupported " + typ.Kind().String()
}

// checkSample walks a Go struct value and its encoding/json form side by side.
// In a full sample every field must be non-zero and its key present; in a
// minimal sample exactly the fields without omitempty may be set and present.
// It recurses into nested structs and slices of structs.
func checkSample(t *testing.T, path string, rv reflect.Value, js any, minimal bool) {
	t.Helper()
	for rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	obj, ok := js.(map[string]any)
	if !ok {
		t.Errorf("%s: encodes as %T, want a JSON object", path, js)
		return
	}
	seen := make(map[string]bool)
	for _, f := range jsonFields(t, rv.Type()) {
		seen[f.name] = true
		p := path + "." + f.name
		fv := rv.Field(f.index)
		val, present := obj[f.name]
		switch {
		case minimal && f.optional:
			if !fv.IsZero() || present {
				t.Errorf("%s: set in a minimal sample, but its json tag has omitempty", p)
			}
			continue
		case !minimal && fv.IsZero():
			t.Errorf("%s: zero in a full sample; populate every field", p)
		}
		if !present {
			t.Errorf("%s: missing from the encoded sample", p)
			continue
		}
		st, isSlice, ok := nestedStruct(f.typ)
		if !ok {
			continue
		}
		if !isSlice {
			checkSample(t, p, fv, val, minimal)
			continue
		}
		arr, ok := val.([]any)
		if !ok || len(arr) == 0 || len(arr) != fv.Len() {
			t.Errorf("%s: encodes as %v, want a non-empty array of %s", p, val, st)
			continue
		}
		for i := range arr {
			checkSample(t, fmt.Sprintf("%s[%d]", p, i), fv.Index(i), arr[i], minimal)
		}
	}
	for k := range obj {
		if !seen[k] {
			t.Errorf("%s.%s: encoded key has no json-tagged field", path, k)
		}
	}
}

// ---------------------------------------------------------------------------
// Generic JSON helpers.

// lookup follows a dotted path (object keys and array indexes) and returns the
// container holding its last token and that token.
func lookup(t *testing.T, root any, path string) (parent any, last string) {
	t.Helper()
	toks := strings.Split(path, ".")
	cur := root
	for _, tok := range toks[:len(toks)-1] {
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[tok]
			if !ok {
				t.Fatalf("path %s: no key %q", path, tok)
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				t.Fatalf("path %s: bad index %q", path, tok)
			}
			cur = c[i]
		default:
			t.Fatalf("path %s: %q is inside a %T", path, tok, cur)
		}
	}
	return cur, toks[len(toks)-1]
}

// deleteKey is a sentinel for set: remove the key instead of setting it.
type deleteKey struct{}

func set(t *testing.T, root any, path string, v any) {
	t.Helper()
	parent, last := lookup(t, root, path)
	switch c := parent.(type) {
	case map[string]any:
		if _, ok := v.(deleteKey); ok {
			if _, ok := c[last]; !ok {
				t.Fatalf("path %s: nothing to delete", path)
			}
			delete(c, last)
			return
		}
		c[last] = v
	case []any:
		i, err := strconv.Atoi(last)
		if err != nil || i < 0 || i >= len(c) {
			t.Fatalf("path %s: bad index %q", path, last)
		}
		c[i] = v
	default:
		t.Fatalf("path %s: cannot set inside a %T", path, parent)
	}
}

func rename(t *testing.T, root any, path, newName string) {
	t.Helper()
	parent, last := lookup(t, root, path)
	obj, ok := parent.(map[string]any)
	if !ok {
		t.Fatalf("path %s: parent is a %T, not an object", path, parent)
	}
	v, ok := obj[last]
	if !ok {
		t.Fatalf("path %s: no key %q to rename", path, last)
	}
	if _, clash := obj[newName]; clash {
		t.Fatalf("path %s: key %q already exists", path, newName)
	}
	delete(obj, last)
	obj[newName] = v
}

// resolve follows $refs from a node of the schema document doc: local ones
// ("#/$defs/name") and ones to another schema file ("file.json" or
// "file.json#/$defs/name", relative to BaseURI). It returns the document the
// schema reached is in, against which that schema's own $refs resolve, and
// the schema.
func resolve(t *testing.T, doc map[string]any, node any) (map[string]any, map[string]any) {
	t.Helper()
	for range 10 {
		obj, ok := node.(map[string]any)
		if !ok {
			t.Fatalf("schema node is a %T, not an object", node)
		}
		ref, ok := obj["$ref"].(string)
		if !ok {
			return doc, obj
		}
		file, fragment, _ := strings.Cut(ref, "#")
		if file != "" {
			if strings.ContainsAny(file, ":/") {
				t.Fatalf("$ref %q is not relative to %s", ref, schemas.BaseURI)
			}
			doc = schemaDoc(t, file)
		}
		if fragment == "" {
			node = doc
			continue
		}
		name, ok := strings.CutPrefix(fragment, "/$defs/")
		if !ok {
			t.Fatalf("$ref %q is not to a file or to one of its $defs", ref)
		}
		defs, _ := doc["$defs"].(map[string]any)
		target, ok := defs[name]
		if !ok {
			t.Fatalf("$ref %q: no such definition", ref)
		}
		node = target
	}
	t.Fatalf("$ref chain too long")
	return nil, nil
}

func stringSet(v any) map[string]bool {
	out := make(map[string]bool)
	arr, _ := v.([]any)
	for _, e := range arr {
		if s, ok := e.(string); ok {
			out[s] = true
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// Tests.

// TestForType checks that every CloudEvents type Vigil publishes has a schema,
// and that other types have none.
func TestForType(t *testing.T) {
	tests := []struct {
		ceType string
		want   string
	}{
		{events.TypeSiteCreated, schemas.SiteChangeV1},
		{events.TypeSiteUpdated, schemas.SiteChangeV1},
		{events.TypeSitePaused, schemas.SiteChangeV1},
		{events.TypeSiteResumed, schemas.SiteChangeV1},
		{events.TypeSiteDeleted, schemas.SiteChangeV1},
		{events.TypeCheckCommand, schemas.CheckCommandV1},
		{events.TypeCheckBatch, schemas.CheckBatchV1},
		{events.TypeObservation, schemas.ObservationV1},
		{events.TypeSeemsDown, schemas.SiteEventV1},
		{events.TypeDown, schemas.SiteEventV1},
		{events.TypeRecovered, schemas.SiteEventV1},
		{events.TypeTLSExpiring, schemas.SiteEventV1},
		{events.TypeTLSExpired, schemas.SiteEventV1},
		{events.TypeTLSRenewed, schemas.SiteEventV1},
		{events.TypeRegionImpaired, schemas.RegionEventV1},
		{events.TypeRegionRecovered, schemas.RegionEventV1},
	}
	covered := make(map[string]bool)
	for _, tt := range tests {
		t.Run(tt.ceType, func(t *testing.T) {
			got, ok := schemas.ForType(tt.ceType)
			if !ok || got != tt.want {
				t.Fatalf("ForType(%q) = %q, %v; want %q, true", tt.ceType, got, ok, tt.want)
			}
			if _, err := fs.Stat(schemas.Files(), got); err != nil {
				t.Fatalf("ForType(%q) names %s, which Files does not hold: %v", tt.ceType, got, err)
			}
			// The schema says whose data it is.
			desc, _ := schemaDoc(t, got)["description"].(string)
			if !strings.Contains(desc, tt.ceType) {
				t.Errorf("%s: description does not name CloudEvents type %s", got, tt.ceType)
			}
		})
		covered[tt.want] = true
	}
	for _, name := range allSchemaNames() {
		if !covered[name] {
			t.Errorf("schema %s is the data of no CloudEvents type", name)
		}
	}
	for _, ceType := range []string{
		"",
		"dev.vigil.site.config.created.v2",
		"dev.vigil.check.command",
		"dev.vigil.check.batch",
		"dev.vigil.site.up.v1",
		"DEV.VIGIL.CHECK.COMMAND.V1",
		"com.example.other.v1",
	} {
		if name, ok := schemas.ForType(ceType); ok {
			t.Errorf("ForType(%q) = %q, true; want false", ceType, name)
		}
	}
}

// TestSchemaFilesCompile checks the set of files and that each compiles from
// the embedded files alone, is draft 2020-12, and has a matching $id, a title
// and a description.
func TestSchemaFilesCompile(t *testing.T) {
	got, err := fs.Glob(schemas.Files(), "*.json")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(allSchemaNames())
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Files() holds %v, want %v", got, want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			doc := schemaDoc(t, name)
			if s := doc["$schema"]; s != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v, want draft 2020-12", s)
			}
			if id := doc["$id"]; id != schemas.BaseURI+name {
				t.Errorf("$id = %v, want %s", id, schemas.BaseURI+name)
			}
			for _, k := range []string{"title", "description"} {
				if s, _ := doc[k].(string); s == "" {
					t.Errorf("no %s", k)
				}
			}
			if doc["type"] != "object" || doc["additionalProperties"] != false {
				t.Errorf("top level must be a closed object: type %v, additionalProperties %v", doc["type"], doc["additionalProperties"])
			}
			// Each file compiles given only itself and the files its $refs
			// name, loaded from Files() by their $id (nothing is fetched).
			// Only the batch refers to another file.
			c := newCompiler(t, name)
			var loader embeddedLoader
			c.UseLoader(&loader)
			if _, err := c.Compile(schemas.BaseURI + name); err != nil {
				t.Fatalf("compile: %v", err)
			}
			var wantLoaded []string
			if name == schemas.CheckBatchV1 {
				wantLoaded = []string{schemas.CheckCommandV1}
			}
			if !slices.Equal(loader.loaded, wantLoaded) {
				t.Errorf("compiling loaded %v, want %v", loader.loaded, wantLoaded)
			}
		})
	}
}

// TestSchemaObjectsClosed walks every schema and checks that each object
// schema forbids unknown properties (apart from the string-to-string maps) and
// that each property has a description.
func TestSchemaObjectsClosed(t *testing.T) {
	for _, name := range allSchemaNames() {
		t.Run(name, func(t *testing.T) {
			doc := schemaDoc(t, name)
			var walk func(path string, node any)
			walk = func(path string, node any) {
				switch n := node.(type) {
				case []any:
					for i, e := range n {
						walk(fmt.Sprintf("%s/%d", path, i), e)
					}
				case map[string]any:
					if n["type"] == "object" {
						if path == "#/$defs/stringMap" {
							ap, _ := n["additionalProperties"].(map[string]any)
							if ap["type"] != "string" || len(ap) != 1 {
								t.Errorf("%s: additionalProperties = %v, want {type: string}", path, n["additionalProperties"])
							}
						} else if n["additionalProperties"] != false {
							t.Errorf("%s: object without additionalProperties: false", path)
						}
						props, _ := n["properties"].(map[string]any)
						for _, p := range sortedKeys(props) {
							prop, _ := props[p].(map[string]any)
							if s, _ := prop["description"].(string); s == "" {
								t.Errorf("%s/properties/%s: no description", path, p)
							}
						}
						for r := range stringSet(n["required"]) {
							if _, ok := props[r]; !ok {
								t.Errorf("%s: required %q is not a property", path, r)
							}
						}
					}
					for _, k := range sortedKeys(n) {
						if k == "enum" || k == "required" {
							continue
						}
						walk(path+"/"+k, n[k])
					}
				}
			}
			walk("#", doc)
		})
	}
}

// TestSchemaMatchesGoType compares each schema with its Go type, object by
// object: the schema's properties are exactly the json tag names, its
// required list is exactly the tags without omitempty, and each property has
// the JSON type the Go field encodes as.
func TestSchemaMatchesGoType(t *testing.T) {
	tests := []struct {
		name string
		typ  reflect.Type
	}{
		{schemas.SiteChangeV1, reflect.TypeFor[events.SiteChange]()},
		{schemas.CheckCommandV1, reflect.TypeFor[events.CheckCommand]()},
		{schemas.CheckBatchV1, reflect.TypeFor[events.CheckBatch]()},
		{schemas.ObservationV1, reflect.TypeFor[events.Observation]()},
		{schemas.SiteEventV1, reflect.TypeFor[events.SiteEvent]()},
		{schemas.RegionEventV1, reflect.TypeFor[events.RegionEvent]()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := schemaDoc(t, tt.name)
			compareObject(t, tt.typ.String(), doc, doc, tt.typ)
		})
	}
}

func compareObject(t *testing.T, path string, doc map[string]any, node any, typ reflect.Type) {
	t.Helper()
	doc, obj := resolve(t, doc, node)
	if obj["type"] != "object" || obj["additionalProperties"] != false {
		t.Errorf("%s: schema is not a closed object", path)
	}
	props, _ := obj["properties"].(map[string]any)
	required := stringSet(obj["required"])
	goNames := make(map[string]bool)
	for _, f := range jsonFields(t, typ) {
		goNames[f.name] = true
		p := path + "." + f.name
		prop, ok := props[f.name]
		if !ok {
			t.Errorf("%s: Go field has no schema property", p)
			continue
		}
		if !f.optional && !required[f.name] {
			t.Errorf("%s: json tag has no omitempty, but the schema does not require it", p)
		}
		if f.optional && required[f.name] {
			t.Errorf("%s: json tag has omitempty, but the schema requires it", p)
		}
		propDoc, resolved := resolve(t, doc, prop)
		if got, want := resolved["type"], jsonType(f.typ); got != want {
			t.Errorf("%s: schema type %v, Go encodes %s", p, got, want)
		}
		st, isSlice, ok := nestedStruct(f.typ)
		if !ok {
			continue
		}
		if isSlice {
			compareObject(t, p+"[]", propDoc, resolved["items"], st)
		} else {
			compareObject(t, p, propDoc, resolved, st)
		}
	}
	for _, k := range sortedKeys(props) {
		if !goNames[k] {
			t.Errorf("%s.%s: schema property has no Go field", path, k)
		}
	}
}

// TestSharedDefinitionsAgree checks that a definition repeated in several
// files (ulid, siteId, duration, class, ...) is the same in each.
func TestSharedDefinitionsAgree(t *testing.T) {
	first := make(map[string]any)
	firstIn := make(map[string]string)
	for _, name := range allSchemaNames() {
		defs, _ := schemaDoc(t, name)["$defs"].(map[string]any)
		for _, d := range sortedKeys(defs) {
			if prev, ok := first[d]; ok {
				if !reflect.DeepEqual(prev, defs[d]) {
					t.Errorf("$defs/%s differs between %s and %s", d, firstIn[d], name)
				}
				continue
			}
			first[d], firstIn[d] = defs[d], name
		}
	}
}

// TestSamplesValidate marshals a full sample of every message type (every
// field populated, one per kind) and a minimal one (required fields only) with
// encoding/json and validates each against the schema ForType names for its
// CloudEvents type.
func TestSamplesValidate(t *testing.T) {
	all := compileAll(t)
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			_, sch := schemaFor(t, all, s.msg)
			checkSample(t, reflect.TypeOf(s.msg).Elem().Name(), reflect.ValueOf(s.msg), asMap(t, s.msg), s.minimal)
			if err := validateValue(t, sch, s.msg); err != nil {
				b, _ := json.MarshalIndent(s.msg, "", "  ")
				t.Fatalf("sample does not validate: %v\n%s", err, b)
			}
			// The decoded form validates too (what a consumer re-publishes).
			if err := validateValue(t, sch, asMap(t, s.msg)); err != nil {
				t.Fatalf("decoded sample does not validate: %v", err)
			}
		})
	}
}

// TestRenamedFieldRejected takes valid samples as generic JSON, renames one
// key, and checks validation fails: a field renamed on either side (Go or
// schema) is caught.
func TestRenamedFieldRejected(t *testing.T) {
	all := compileAll(t)
	tests := []struct {
		msg     events.Message
		path    string
		newName string
	}{
		{fullSiteChange(events.ChangeUpdated), "id", "change_id"},
		{fullSiteChange(events.ChangeUpdated), "actor", "author"},
		{fullSiteChange(events.ChangeUpdated), "site.url", "uri"},
		{fullSiteChange(events.ChangeUpdated), "site.labels", "label"},
		{fullSiteChange(events.ChangeUpdated), "site.maintenance.0.duration", "length"},
		{fullSiteChange(events.ChangeUpdated), "site.maintenance.0.cron", "crontab"},
		{minimalSiteChange(), "paused", "is_paused"},
		{fullCheckCommand(), "site_id", "siteId"},
		{fullCheckCommand(), "incident_id", "incident"},
		{fullCheckCommand(), "check.tls_verify", "verify_tls"},
		{fullCheckCommand(), "check.last_redirect_chain", "redirect_chain"},
		{fullCheckBatch(), "id", "batch_id"},
		{fullCheckBatch(), "region", "zone"},
		{fullCheckBatch(), "commands", "checks"},
		{fullCheckBatch(), "commands.1.site_id", "siteId"},
		{fullCheckBatch(), "commands.0.check.tls_verify", "verify_tls"},
		{minimalCheckBatch(), "commands.0.due_at", "due"},
		{fullObservation(), "checker_id", "checker"},
		{fullObservation(), "status_code", "status"},
		{fullObservation(), "timings.ttfb_ms", "ttfb"},
		{fullObservation(), "tls.not_after", "expires"},
		{minimalObservation(), "timings", "timing"},
		{fullSiteEvent(events.KindDown), "failure_status", "failure_code"},
		{fullSiteEvent(events.KindDown), "observation_ids", "observations"},
		{fullSiteEvent(events.KindDown), "votes.0.observation_id", "obs_id"},
		{fullSiteEvent(events.KindTLSExpiring), "cert_days_left", "days_left"},
		{fullRegionEvent(events.KindRegionImpaired), "window", "period"},
		{fullRegionEvent(events.KindRegionImpaired), "sites", "site_count"},
	}
	for _, tt := range tests {
		name, sch := schemaFor(t, all, tt.msg)
		t.Run(name+"/"+tt.path, func(t *testing.T) {
			doc := asMap(t, tt.msg)
			if err := validateValue(t, sch, doc); err != nil {
				t.Fatalf("sample does not validate before the rename: %v", err)
			}
			rename(t, doc, tt.path, tt.newName)
			if err := validateValue(t, sch, doc); err == nil {
				t.Fatalf("renaming %s to %s still validates", tt.path, tt.newName)
			}
		})
	}
}

// TestMissingRequiredRejected drops, one at a time, each top-level field whose
// json tag has no omitempty from a minimal sample, and checks validation
// fails.
func TestMissingRequiredRejected(t *testing.T) {
	all := compileAll(t)
	for _, m := range []events.Message{minimalSiteChange(), minimalCheckCommand(), minimalCheckBatch(), minimalObservation(), minimalSiteEvent(), minimalRegionEvent()} {
		name, sch := schemaFor(t, all, m)
		for _, f := range jsonFields(t, reflect.TypeOf(m).Elem()) {
			if f.optional {
				continue
			}
			t.Run(name+"/"+f.name, func(t *testing.T) {
				doc := asMap(t, m)
				set(t, doc, f.name, deleteKey{})
				if err := validateValue(t, sch, doc); err == nil {
					t.Fatalf("sample without %s still validates", f.name)
				}
			})
		}
	}
}

// TestInvalidValuesRejected checks the enums, patterns, formats and ranges.
func TestInvalidValuesRejected(t *testing.T) {
	all := compileAll(t)
	tests := []struct {
		msg   events.Message
		path  string
		value any
	}{
		// site_change
		{fullSiteChange(events.ChangeCreated), "change", "renamed"},
		{fullSiteChange(events.ChangeCreated), "at", "yesterday"},
		{fullSiteChange(events.ChangeCreated), "at", "2025-03-14 09:26:53"},
		{fullSiteChange(events.ChangeCreated), "id", strings.ToLower(ulid("x"))},
		{fullSiteChange(events.ChangeCreated), "paused", "false"},
		{fullSiteChange(events.ChangeCreated), "site.id", "blog.42"},
		{fullSiteChange(events.ChangeCreated), "site.id", ""},
		{fullSiteChange(events.ChangeCreated), "site.id", strings.Repeat("a", 65)},
		{fullSiteChange(events.ChangeCreated), "site.url", "/relative/path"},
		{fullSiteChange(events.ChangeCreated), "site.interval", "5"},
		{fullSiteChange(events.ChangeCreated), "site.interval", "-5m"},
		{fullSiteChange(events.ChangeCreated), "site.interval", "5 minutes"},
		{fullSiteChange(events.ChangeCreated), "site.interval", "1d"},
		{fullSiteChange(events.ChangeCreated), "site.interval", 300},
		{fullSiteChange(events.ChangeCreated), "site.method", "POST"},
		{fullSiteChange(events.ChangeCreated), "site.redirects", "ignore"},
		{fullSiteChange(events.ChangeCreated), "site.headers.X-Token", 42},
		{fullSiteChange(events.ChangeCreated), "site.labels.team", true},
		{fullSiteChange(events.ChangeCreated), "site.expect_status.0", 700},
		{fullSiteChange(events.ChangeCreated), "site.quorum", 0},
		{fullSiteChange(events.ChangeCreated), "site.regions.0", "eu.west"},
		{fullSiteChange(events.ChangeCreated), "site.maintenance.0.cron", "* * *"},
		{fullSiteChange(events.ChangeCreated), "site.maintenance.0.duration", deleteKey{}},
		{fullSiteChange(events.ChangeCreated), "site.maintenance.0", map[string]any{"duration": "1h"}},
		// check_command
		{fullCheckCommand(), "bucket", 64},
		{fullCheckCommand(), "bucket", -1},
		{fullCheckCommand(), "bucket", 1.5},
		{fullCheckCommand(), "purpose", "manual"},
		{fullCheckCommand(), "region", "eu west"},
		{fullCheckCommand(), "region", ""},
		{fullCheckCommand(), "config_seq", -1},
		{fullCheckCommand(), "check.method", "get"},
		{fullCheckCommand(), "check.timeout", ""},
		{fullCheckCommand(), "check", nil},
		// check_batch
		{fullCheckBatch(), "id", strings.ToLower(ulid("x"))},
		{fullCheckBatch(), "region", "eu west"},
		{fullCheckBatch(), "region", "eu.west"},
		{fullCheckBatch(), "region", ""},
		{fullCheckBatch(), "commands", []any{}},
		{fullCheckBatch(), "commands", nil},
		{fullCheckBatch(), "commands", map[string]any{}},
		{fullCheckBatch(), "commands.0", map[string]any{}},
		{fullCheckBatch(), "commands.0", ulid("command")},
		{fullCheckBatch(), "commands.0.bucket", 64},
		{fullCheckBatch(), "commands.1.purpose", "manual"},
		{fullCheckBatch(), "commands.1.due_at", "soon"},
		{fullCheckBatch(), "commands.0.check.method", "POST"},
		{fullCheckBatch(), "commands.1.extra", "x"},
		{minimalCheckBatch(), "commands.0.site_id", deleteKey{}},
		{minimalCheckBatch(), "commands.0.check", nil},
		// observation
		{fullObservation(), "class", "bogus"},
		{fullObservation(), "status_code", 99},
		{fullObservation(), "status_code", 600},
		{fullObservation(), "site_id", "a*b"},
		{fullObservation(), "timings.total_ms", -1},
		{fullObservation(), "tls.not_before", "not a time"},
		{fullObservation(), "tls.extra", "x"},
		// site_event
		{fullSiteEvent(events.KindDown), "kind", "impaired"},
		{fullSiteEvent(events.KindDown), "state", "paused"},
		{fullSiteEvent(events.KindDown), "severity", 5},
		{fullSiteEvent(events.KindDown), "severity", -1},
		{fullSiteEvent(events.KindDown), "reason", "timeout"},
		{fullSiteEvent(events.KindDown), "failure_class", "bogus"},
		{fullSiteEvent(events.KindDown), "observation_ids", nil},
		{fullSiteEvent(events.KindDown), "observation_ids", []any{}},
		{fullSiteEvent(events.KindDown), "votes.0.vote", "maybe"},
		{fullSiteEvent(events.KindDown), "votes.0.status_code", 42},
		{fullSiteEvent(events.KindDown), "cert_days_left", 1.5},
		// region_event
		{fullRegionEvent(events.KindRegionImpaired), "kind", "down"},
		{fullRegionEvent(events.KindRegionImpaired), "checks", -1},
		{fullRegionEvent(events.KindRegionImpaired), "window", "5 min"},
		{fullRegionEvent(events.KindRegionImpaired), "region", "ap.south"},
	}
	for _, tt := range tests {
		name, sch := schemaFor(t, all, tt.msg)
		t.Run(fmt.Sprintf("%s/%s=%v", name, tt.path, tt.value), func(t *testing.T) {
			doc := asMap(t, tt.msg)
			set(t, doc, tt.path, tt.value)
			if err := validateValue(t, sch, doc); err == nil {
				t.Fatalf("%s = %#v validates", tt.path, tt.value)
			}
		})
	}
}

// TestValidVariants checks shapes the schemas must accept that the samples do
// not cover.
func TestValidVariants(t *testing.T) {
	all := compileAll(t)
	tests := []struct {
		name   string
		msg    events.Message
		mutate func(t *testing.T, doc map[string]any)
	}{
		{"one-off maintenance window", fullSiteChange(events.ChangeUpdated), func(t *testing.T, doc map[string]any) {
			set(t, doc, "site.maintenance.0.cron", deleteKey{})
		}},
		{"recurring maintenance window", fullSiteChange(events.ChangeUpdated), func(t *testing.T, doc map[string]any) {
			set(t, doc, "site.maintenance.0.start", deleteKey{})
		}},
		{"ULID site id", fullSiteChange(events.ChangeUpdated), func(t *testing.T, doc map[string]any) {
			set(t, doc, "site.id", ulid("site"))
		}},
		{"64-character site id", fullSiteChange(events.ChangeUpdated), func(t *testing.T, doc map[string]any) {
			set(t, doc, "site.id", strings.Repeat("A_z-9", 12)+"abcd")
		}},
		{"time with offset and no fraction", fullCheckCommand(), func(t *testing.T, doc map[string]any) {
			set(t, doc, "due_at", "2025-03-14T11:26:53+02:00")
		}},
		{"zero timings", fullObservation(), func(t *testing.T, doc map[string]any) {
			doc["timings"] = map[string]any{"dns_ms": 0, "connect_ms": 0, "tls_ms": 0, "ttfb_ms": 0, "total_ms": 0}
		}},
		{"empty headers", fullCheckCommand(), func(t *testing.T, doc map[string]any) {
			set(t, doc, "check.headers", map[string]any{})
		}},
		{"batch of full and minimal commands", fullCheckBatch(), func(t *testing.T, doc map[string]any) {
			set(t, doc, "commands.1", asMap(t, minimalCheckCommand()))
		}},
		{"batch of 50 commands", minimalCheckBatch(), func(t *testing.T, doc map[string]any) {
			cmds := make([]any, 50)
			for i := range cmds {
				cmds[i] = asMap(t, minimalCheckCommand())
			}
			set(t, doc, "commands", cmds)
		}},
		{"expired certificate", fullSiteEvent(events.KindTLSExpired), func(t *testing.T, doc map[string]any) {
			set(t, doc, "cert_days_left", -3)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, sch := schemaFor(t, all, tt.msg)
			doc := asMap(t, tt.msg)
			tt.mutate(t, doc)
			if err := validateValue(t, sch, doc); err != nil {
				t.Fatalf("does not validate: %v", err)
			}
		})
	}
}

// TestDurationPattern checks that what events.Duration writes matches the
// schemas' duration pattern, and that other text does not.
func TestDurationPattern(t *testing.T) {
	c := newCompiler(t, allSchemaNames()...)
	sch, err := c.Compile(schemas.BaseURI + schemas.RegionEventV1 + "#/$defs/duration")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{
		0, time.Nanosecond, 250 * time.Microsecond, 15 * time.Millisecond,
		1500 * time.Millisecond, 10 * time.Second, 5 * time.Minute,
		90 * time.Minute, time.Hour + 5*time.Second, 24 * time.Hour,
	} {
		b, err := json.Marshal(events.Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		if err := validateJSON(sch, b); err != nil {
			t.Errorf("events.Duration(%v) encodes as %s, which the schema rejects: %v", d, b, err)
		}
	}
	for _, s := range []string{"0", "1h30m", "2.5s", "300us", "300μs"} {
		if err := validateValue(t, sch, s); err != nil {
			t.Errorf("%q rejected: %v", s, err)
		}
	}
	for _, s := range []string{"", "5", "-5m", "5 m", "1d", "5M", "m", ".5s", "5m ", "00"} {
		if err := validateValue(t, sch, s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// TestSiteEventNilObservationIDs documents that observation_ids has no
// omitempty: a SiteEvent whose ObservationIDs is nil encodes it as null, which
// the schema rejects, so producers must always set it.
func TestSiteEventNilObservationIDs(t *testing.T) {
	all := compileAll(t)
	ev := minimalSiteEvent()
	ev.ObservationIDs = nil
	_, sch := schemaFor(t, all, ev)
	if err := validateValue(t, sch, ev); err == nil {
		t.Fatal("a SiteEvent with nil ObservationIDs validates")
	}
}

// TestCheckBatchEmptyRejected documents that the schema is stricter than Go
// about a batch's commands: a CheckBatch whose Commands is nil encodes it as
// null and one whose Commands is empty as [], both of which Go decodes, but
// Vigil never publishes an empty batch (a checker drops one as poison), so
// the schema rejects both.
func TestCheckBatchEmptyRejected(t *testing.T) {
	all := compileAll(t)
	for _, commands := range [][]events.CheckCommand{nil, {}} {
		b := minimalCheckBatch()
		b.Commands = commands
		_, sch := schemaFor(t, all, b)
		if err := validateValue(t, sch, b); err == nil {
			t.Errorf("a CheckBatch with Commands %#v validates", commands)
		}
	}
}
