package sites

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/vigil-dev/vigil/events"
	"go.yaml.in/yaml/v3"
)

// siteFile is the form of a site file: one list of sites.
type siteFile struct {
	Sites *[]events.Site `yaml:"sites"`
}

// ParseFile reads a site file, the YAML form of `vigil sites apply`:
//
//	sites:
//	  - id: shop-eu
//	    url: https://shop.example.com/health
//	    interval: 1m
//
// The file is read strictly: a misspelt or unknown field, a value of the
// wrong type and a key given twice are refused, each named with its site, its
// field and its line, because a typo silently ignored would leave a site
// monitored with defaults the operator never chose. IDs given twice are
// refused too. An empty file or one without a sites list is refused, so that
// an empty file cannot prune every site; write "sites: []" to mean no sites.
//
// ParseFile checks the file's form, not the values: NormalizeAll (which
// Registry.Plan calls) validates them and fills in defaults.
func ParseFile(r io.Reader) ([]events.Site, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read site file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f siteFile
	err = dec.Decode(&f)
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the site file is empty: it needs a sites list (write \"sites: []\" to mean no sites)")
	}
	if err != nil {
		return nil, diagnose(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("line %d: the site file holds more than one YAML document; put every site under one sites list", extra.Line)
	}
	if f.Sites == nil {
		return nil, errors.New("the site file has no sites list (write \"sites: []\" to mean no sites)")
	}
	sites := *f.Sites
	var errs []error
	seen := make(map[string]int, len(sites))
	for i, s := range sites {
		if s.ID == "" {
			continue
		}
		if j, dup := seen[s.ID]; dup {
			errs = append(errs, &FieldError{Site: s.ID, Index: i, Field: "id", Reason: fmt.Sprintf("duplicate: sites[%d] has the same id", j)})
			continue
		}
		seen[s.ID] = i
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if sites == nil {
		sites = []events.Site{}
	}
	return sites, nil
}

// diagnose turns a failed strict decode into errors that name the site, the
// field and the line. yaml reports unknown fields and type errors with a line
// but no site, and errors from a value's UnmarshalText (a bad duration) with
// neither, so the file is walked node by node to place each problem.
func diagnose(data []byte, decodeErr error) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return errors.New("YAML syntax error: " + cleanYAMLError(err))
	}
	if len(root.Content) == 0 {
		return errors.New(cleanYAMLError(decodeErr))
	}
	doc := deref(root.Content[0])
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a site file is a mapping with a sites list", doc.Line)
	}
	var errs []error
	var list *yaml.Node
	forPairs(doc, func(k, v *yaml.Node) {
		if k.Value != "sites" {
			errs = append(errs, fmt.Errorf("line %d: unknown field %q: a site file has one field, sites%s", k.Line, k.Value, suggest(k.Value, []string{"sites"})))
			return
		}
		list = deref(v)
	})
	if list != nil && list.Kind != yaml.SequenceNode && !(list.Kind == yaml.ScalarNode && list.Tag == "!!null") {
		errs = append(errs, fmt.Errorf("line %d: sites must be a list", list.Line))
		list = nil
	}
	if list != nil {
		for i, item := range list.Content {
			errs = append(errs, diagnoseSite(i, deref(item))...)
		}
	}
	if len(errs) == 0 {
		return errors.New(cleanYAMLError(decodeErr))
	}
	return errors.Join(errs...)
}

func diagnoseSite(i int, item *yaml.Node) []error {
	if item.Kind != yaml.MappingNode {
		return []error{&FieldError{Index: i, Reason: fmt.Sprintf("must be a mapping of fields (line %d)", item.Line)}}
	}
	id := ""
	forPairs(item, func(k, v *yaml.Node) {
		if k.Value == "id" && v.Kind == yaml.ScalarNode {
			id = v.Value
		}
	})
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Site: id, Index: i, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	checkFields(item, siteFields, "", fail)
	forPairs(item, func(k, v *yaml.Node) {
		if k.Value != "maintenance" {
			return
		}
		if list := deref(v); list.Kind == yaml.SequenceNode {
			for j, w := range list.Content {
				if w = deref(w); w.Kind == yaml.MappingNode {
					checkFields(w, windowFields, fmt.Sprintf("maintenance[%d].", j), fail)
				}
			}
		}
	})
	return errs
}

// checkFields checks that every key of a mapping names a field of the struct
// fields describes, is given once, and has a value of the field's type.
func checkFields(m *yaml.Node, fields map[string]reflect.Type, prefix string, fail func(field, format string, args ...any)) {
	lines := map[string]int{}
	forPairs(m, func(k, v *yaml.Node) {
		if k.Value == "<<" {
			return // a merge key; yaml resolves it
		}
		typ, known := fields[k.Value]
		if !known {
			fail(prefix+k.Value, "unknown field (line %d)%s", k.Line, suggest(k.Value, sortedNames(fields)))
			return
		}
		if first, dup := lines[k.Value]; dup {
			fail(prefix+k.Value, "given twice (lines %d and %d)", first, k.Line)
			return
		}
		lines[k.Value] = k.Line
		if prefix == "" && k.Value == "maintenance" {
			// Windows are checked one by one, with their own field names.
			if deref(v).Kind == yaml.SequenceNode {
				return
			}
		}
		if err := v.Decode(reflect.New(typ).Interface()); err != nil {
			fail(prefix+k.Value, "%s (line %d)", stripLine(cleanYAMLError(err)), v.Line)
		}
	})
}

// siteFields and windowFields map the YAML names of a site's and a
// maintenance window's fields to their types.
var (
	siteFields   = yamlFields(reflect.TypeFor[events.Site]())
	windowFields = yamlFields(reflect.TypeFor[events.MaintenanceWindow]())
)

func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func sortedNames(m map[string]reflect.Type) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	return names
}

func forPairs(m *yaml.Node, fn func(k, v *yaml.Node)) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		fn(m.Content[i], m.Content[i+1])
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return deref(n.Content[0])
	}
	return n
}

// cleanYAMLError renders a yaml error on one line, without the package's
// "yaml: unmarshal errors:" preamble.
func cleanYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = strings.TrimSpace(m)
		}
		return strings.Join(msgs, "; ")
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return strings.Join(strings.Fields(msg), " ")
}

// stripLine drops a leading "line N: " from a yaml message whose line is
// reported separately.
func stripLine(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if _, after, ok := strings.Cut(rest, ": "); ok {
			return after
		}
	}
	return msg
}

// suggest returns `; did you mean "x"?` for the known name closest to a
// misspelt one, or "" if none is close.
func suggest(name string, known []string) string {
	best, bestDist := "", len(name)+1
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestDist || (d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	if best == "" || bestDist > max(2, len(name)/4) {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
