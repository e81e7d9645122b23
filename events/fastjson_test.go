package events

import (
	"bytes"
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The fast JSON path (fastjson.go) must be indistinguishable from
// encoding/json: marshalJSONFast gives json.Marshal's bytes or declines where
// json.Marshal fails, and decodeFast, whenever it takes an input, leaves the
// value json.Unmarshal leaves, where json.Unmarshal succeeds. These tests and
// the two fuzzers compare the two on Vigil's own messages and on everything
// around them.

// checkFastDecode decodes data with decodeFast and with json.Unmarshal, each
// into its own copy of the starting value newV makes, and reports a
// difference: a value the fast path accepted that json.Unmarshal refuses or
// decodes otherwise, or a value the fast path changed while declining. It
// returns whether the fast path took the input.
func checkFastDecode(t *testing.T, data []byte, newV func() Message) bool {
	t.Helper()
	fv, jv := newV(), newV()
	fast := decodeFast(data, fv)
	err := json.Unmarshal(data, jv)
	if !fast {
		if untouched := newV(); !reflect.DeepEqual(fv, untouched) {
			t.Errorf("declining, the fast path changed the value of %T:\n got %+v\nwant %+v\ninput %q", fv, fv, untouched, data)
		}
		return false
	}
	if err != nil {
		t.Errorf("the fast path decoded %q into %T, which encoding/json refuses: %v", data, fv, err)
		return true
	}
	if !reflect.DeepEqual(fv, jv) {
		t.Errorf("decoded values of %T differ for %q:\nfast %+v\njson %+v", fv, data, fv, jv)
	}
	// DeepEqual takes -0 for 0; the encoded forms tell them apart.
	if fb, fe := json.Marshal(fv); fe == nil {
		if jb, _ := json.Marshal(jv); !bytes.Equal(fb, jb) {
			t.Errorf("decoded values of %T encode differently for %q:\nfast %s\njson %s", fv, data, fb, jb)
		}
	}
	return true
}

// checkFastMarshal encodes m with marshalJSONFast and with json.Marshal and
// reports a difference: other bytes, or the fast path declining a value
// json.Marshal encodes (it may decline only what json.Marshal refuses). It
// returns the encoded bytes, or nil if json.Marshal refused m.
func checkFastMarshal(t *testing.T, m Message) []byte {
	t.Helper()
	got, fast := marshalJSONFast(m)
	want, err := json.Marshal(m)
	switch {
	case err != nil && fast:
		t.Errorf("the fast path encoded %+v, which json.Marshal refuses (%v), as %s", m, err, got)
	case err == nil && !fast:
		t.Errorf("the fast path declined %+v, which json.Marshal encodes as %s", m, want)
	case err == nil && !bytes.Equal(got, want):
		t.Errorf("encoded forms differ:\nfast %s\njson %s", got, want)
	}
	if err != nil {
		return nil
	}
	// What the data path writes comes out as json.Marshal writes it too.
	if data, derr := marshalData(m); derr != nil || !bytes.Equal(data, want) {
		t.Errorf("marshalData = %s, %v; want %s", data, derr, want)
	}
	return want
}

// decodeTargets are fresh zero values of each type the fast path decodes,
// and a message's data is checked against each that reads it.
func decodeTargets(m Message) []func() Message {
	switch m.(type) {
	case *Observation:
		return []func() Message{
			func() Message { return &Observation{} },
			func() Message { return &ObservationSummary{} },
		}
	case *CheckCommand:
		return []func() Message{func() Message { return &CheckCommand{} }}
	case *CheckBatch:
		return []func() Message{func() Message { return &CheckBatch{} }}
	}
	return nil
}

// TestFastJSONOwnMessages: Vigil's own observations and commands encode on
// the fast path, byte for byte as json.Marshal writes them, and their data
// decodes on the fast path, into what json.Unmarshal gives, as an Observation
// or ObservationSummary, or as a CheckCommand. Values json.Marshal refuses (a
// NaN timing, a year outside 0 to 9999) are declined, for json.Marshal's
// error to come out.
func TestFastJSONOwnMessages(t *testing.T) {
	var n int
	for _, s := range codecSamples() {
		targets := decodeTargets(s.msg)
		if targets == nil {
			continue
		}
		n++
		t.Run(s.name, func(t *testing.T) {
			data := checkFastMarshal(t, s.msg)
			if data == nil {
				if _, fast := marshalJSONFast(s.msg); fast {
					t.Errorf("fast path took a message json.Marshal refuses")
				}
				return
			}
			for _, newV := range targets {
				if !checkFastDecode(t, data, newV) {
					t.Errorf("the fast path declined %s's data as %T: %s", s.name, newV(), data)
				}
			}
			// Marshal writes that data (unless it refuses the envelope).
			if msg, err := Marshal(s.msg); err == nil && !bytes.Equal(msg.Data, data) {
				t.Errorf("Marshal wrote data %s, json.Marshal %s", msg.Data, data)
			}
		})
	}
	if n < 20 {
		t.Fatalf("only %d observation and command samples", n)
	}
}

// TestFastDecodeCases compares the fast decoder with json.Unmarshal on inputs
// around Vigil's own, and pins which ones it takes and which it leaves to
// encoding/json.
func TestFastDecodeCases(t *testing.T) {
	obs, err := json.Marshal(benchObservation())
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := json.Marshal(benchCheckCommand())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(doc []byte, old, new string) string {
		if !bytes.Contains(doc, []byte(old)) {
			t.Fatalf("%q not in %s", old, doc)
		}
		return strings.Replace(string(doc), old, new, 1)
	}
	const (
		anyObs = iota // as Observation and as ObservationSummary
		onlyObs
		onlySum
		onlyCmd
	)
	for _, c := range []struct {
		name   string
		target int
		in     string
		fast   bool
	}{
		{"observation", anyObs, string(obs), true},
		{"command", onlyCmd, string(cmd), true},
		{"empty object", anyObs, `{}`, true},
		{"empty command", onlyCmd, `{}`, true},
		{"white space", anyObs, " \t\r\n{ \"id\" :\n\"x\" , \"bucket\":1\t}\n ", true},
		{"white space, summary", onlySum, " {\"id\" : \"x\" ,\"timings\" : { \"dns_ms\" : 1 } } ", true},

		// Strings.
		{"escapes", anyObs, `{"id":"a\"b\\c\/d\b\f\n\r\te"}`, true},
		{"unicode escapes", anyObs, `{"id":"\u00e9\u20AC\u0000\u001f\u2028"}`, true},
		{"surrogate pair", anyObs, `{"id":"\ud83d\ude00"}`, true},
		{"lone high surrogate", anyObs, `{"id":"a\ud83dz"}`, true},
		{"lone low surrogate", anyObs, `{"id":"a\ude00z"}`, true},
		{"high surrogate twice", anyObs, `{"id":"\ud83d\ud83d\ude00"}`, true},
		{"high surrogate, then escape", anyObs, `{"id":"\ud83d\n"}`, true},
		{"high surrogate at end", anyObs, `{"id":"\ud83d"}`, true},
		{"raw UTF-8", anyObs, `{"id":"café ☕ 😀"}`, true},
		{"invalid UTF-8", anyObs, "{\"id\":\"a\xffb\xc3\"}", true},
		{"UTF-8 surrogate", anyObs, "{\"id\":\"\xed\xa0\x80\"}", true},
		{"invalid UTF-8 and escapes", anyObs, "{\"id\":\"\xfe\\u0041\xc3\xa9\"}", true},
		{"HTML escapes", anyObs, `{"final_url":"https://a/?b=1\u0026c=\u003cd\u003e"}`, true},
		{"DEL", anyObs, "{\"id\":\"\x7f\"}", true},
		{"long escaped string", anyObs, `{"error":"` + strings.Repeat(`\"é\u00e9`, 100) + `"}`, true},
		{"control character", anyObs, "{\"id\":\"a\nb\"}", false},
		{"bad escape", anyObs, `{"id":"\x41"}`, false},
		{"single-quote escape", anyObs, `{"id":"\'"}`, false},
		{"short unicode escape", anyObs, `{"id":"\u12"}`, false},
		{"bad hex", anyObs, `{"id":"\u12g4"}`, false},
		{"unterminated string", anyObs, `{"id":"abc`, false},
		{"enum values", onlyObs, `{"purpose":"retry","class":"tls_expired"}`, true},
		{"unknown enum values", onlyObs, `{"purpose":"Retry","class":"nope"}`, true},
		{"escaped enum", onlyObs, `{"purpose":"retr\u0079"}`, true},
		{"redirects", onlyCmd, `{"check":{"redirects":"alert"}}`, true},

		// Numbers.
		{"negative numbers", onlyObs, `{"bucket":-12,"status_code":-0,"timings":{"dns_ms":-1.5,"tls_ms":-0}}`, true},
		{"float forms", onlyObs, `{"timings":{"dns_ms":1e3,"connect_ms":1.5E-7,"tls_ms":2e+2,"ttfb_ms":0.1,"total_ms":123456789012345678901234567890}}`, true},
		{"tiny float", onlyObs, `{"timings":{"dns_ms":5e-324,"connect_ms":1e-400}}`, true},
		{"float out of range", onlyObs, `{"timings":{"dns_ms":1e400}}`, false},
		{"int limits", onlyObs, `{"bucket":9223372036854775807,"config_seq":18446744073709551615}`, true},
		{"int too big", onlyObs, `{"bucket":9223372036854775808}`, false},
		{"uint too big", onlyObs, `{"config_seq":18446744073709551616}`, false},
		{"uint negative", onlyObs, `{"config_seq":-1}`, false},
		{"uint minus zero", onlyObs, `{"config_seq":-0}`, false},
		{"int with fraction", onlyObs, `{"bucket":1.0}`, false},
		{"int with exponent", onlyObs, `{"bucket":1e2}`, false},
		{"leading zero", onlyObs, `{"bucket":01}`, false},
		{"plus sign", onlyObs, `{"bucket":+1}`, false},
		{"bare minus", onlyObs, `{"bucket":-}`, false},
		{"dot without digits", onlyObs, `{"timings":{"dns_ms":1.}}`, false},
		{"exponent without digits", onlyObs, `{"timings":{"dns_ms":1e}}`, false},
		{"hex", onlyObs, `{"bucket":0x10}`, false},
		{"NaN", onlyObs, `{"timings":{"dns_ms":NaN}}`, false},
		{"ints", onlyCmd, `{"check":{"expect_status":[200, -1 ,0]}}`, true},
		{"int list with float", onlyCmd, `{"check":{"expect_status":[200.5]}}`, false},

		// Times and durations.
		{"zero time", anyObs, `{"started_at":"0001-01-01T00:00:00Z"}`, true},
		{"non-UTC time", anyObs, `{"started_at":"2026-11-23T09:45:00.000000005+05:30"}`, true},
		{"negative offset", anyObs, `{"started_at":"2026-11-23T09:45:00-23:59"}`, true},
		{"lower-case t and z", anyObs, `{"started_at":"2026-11-23t09:45:00z"}`, false},
		{"bad time", anyObs, `{"started_at":"yesterday"}`, false},
		{"escaped time", anyObs, `{"started_at":"2026-11-23T09:45:00\u005a"}`, false},
		{"time as number", anyObs, `{"started_at":0}`, false},
		{"time as object", anyObs, `{"started_at":{}}`, false},
		{"durations", onlyCmd, `{"check":{"timeout":"1h2m3.5s"}}`, true},
		{"negative duration", onlyCmd, `{"check":{"timeout":"-1.5us"}}`, true},
		{"escaped duration", onlyCmd, `{"check":{"timeout":"10\u0073"}}`, true},
		{"bad duration", onlyCmd, `{"check":{"timeout":"10"}}`, false},
		{"duration as number", onlyCmd, `{"check":{"timeout":10}}`, false},

		// Lists, maps and pointers.
		{"empty lists", onlyCmd, `{"check":{"keywords":[],"expect_status":[],"forbidden_keywords":[],"last_redirect_chain":[]}}`, true},
		{"empty map", onlyCmd, `{"check":{"headers":{}}}`, true},
		{"map keys", onlyCmd, `{"check":{"headers":{"b":"1","a":"2","A":"3","\u00e9\n":"4","":""}}}`, true},
		{"repeated map key", onlyCmd, `{"check":{"headers":{"a":"1","a":"2"}}}`, true},
		{"map of numbers", onlyCmd, `{"check":{"headers":{"a":1}}}`, false},
		{"list of numbers", onlyCmd, `{"check":{"keywords":[1]}}`, false},
		{"trailing comma in list", onlyCmd, `{"check":{"keywords":["a",]}}`, false},
		{"trailing comma in map", onlyCmd, `{"check":{"headers":{"a":"b",}}}`, false},
		{"empty tls", anyObs, `{"tls":{}}`, true},
		{"full tls", onlyObs, `{"tls":{"version":"TLS 1.3","chain_valid":true,"verify_error":"x"}}`, true},
		{"tls as summary", onlySum, `{"tls":{"version":"TLS 1.3","issuer":"CA","not_after":"2027-01-01T00:00:00Z","chain_valid":false}}`, true},
		{"booleans", onlyCmd, `{"check":{"tls_verify":true},"id":"x"}`, true},
		{"boolean false", onlyCmd, `{"check":{"tls_verify":false}}`, true},
		{"boolean as string", onlyCmd, `{"check":{"tls_verify":"true"}}`, false},
		{"misspelt literal", onlyCmd, `{"check":{"tls_verify":tru}}`, false},

		// Keys.
		{"unknown keys", anyObs, `{"id":"x","zzz":[1,{"a":[null,true,false,"s\u00e9"]},-2.5e3],"other":{}}`, true},
		{"unknown key with escapes in its value", anyObs, `{"extra":"\ud83d\ude00\"","id":"x"}`, true},
		{"unknown key nested deep", anyObs, `{"extra":` + strings.Repeat("[", 60) + strings.Repeat("]", 60) + `}`, true},
		{"unknown key nested too deep", anyObs, `{"extra":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, false},
		{"unknown key, invalid value", anyObs, `{"extra":[1,]}`, false},
		{"unknown key, bad literal", anyObs, `{"extra":nul}`, false},
		{"unknown key, bad nested key", anyObs, `{"extra":{"a\q":1}}`, false},
		{"summary skips observation keys", onlySum, string(obs), true},
		{"key in upper case", anyObs, `{"ID":"x"}`, false},
		{"key in mixed case", anyObs, `{"Site_Id":"x"}`, false},
		{"nested key in upper case", anyObs, `{"timings":{"DNS_ms":1}}`, false},
		{"key with escape", anyObs, `{"\u0069d":"x"}`, false},
		{"key with Kelvin sign", onlyCmd, `{"chec\u212a":{}}`, false},
		{"non-ASCII key", anyObs, `{"ıd":"x"}`, false},
		{"duplicate key", anyObs, `{"id":"x","id":"y"}`, false},
		{"duplicate object key", anyObs, `{"timings":{"dns_ms":1},"timings":{"tls_ms":2}}`, false},
		{"duplicate nested key", anyObs, `{"timings":{"dns_ms":1,"dns_ms":2}}`, false},
		{"duplicate unknown key", anyObs, `{"x":1,"x":2}`, true},

		// Nulls and wrong types.
		{"null field", anyObs, `{"id":null}`, false},
		{"null object", anyObs, `{"timings":null}`, false},
		{"null tls", anyObs, `{"tls":null}`, false},
		{"null list", onlyCmd, `{"check":{"keywords":null}}`, false},
		{"null map value", onlyCmd, `{"check":{"headers":{"a":null}}}`, false},
		{"null document", anyObs, `null`, false},
		{"string for int", anyObs, `{"status_code":"200"}`, false},
		{"number for string", anyObs, `{"id":1}`, false},
		{"list for object", anyObs, `{"timings":[]}`, false},
		{"object for string", anyObs, `{"id":{}}`, false},
		{"array document", anyObs, `[]`, false},
		{"string document", anyObs, `"x"`, false},

		// Broken documents.
		{"empty input", anyObs, ``, false},
		{"only space", anyObs, ` `, false},
		{"truncated", anyObs, string(obs[:len(obs)/2]), false},
		{"truncated command", onlyCmd, string(cmd[:len(cmd)-1]), false},
		{"trailing garbage", anyObs, string(obs) + `x`, false},
		{"second document", anyObs, string(obs) + `{}`, false},
		{"trailing NUL", anyObs, string(obs) + "\x00", false},
		{"byte-order mark", anyObs, "\ufeff{}", false},
		{"missing colon", anyObs, `{"id" "x"}`, false},
		{"missing comma", anyObs, `{"id":"x" "bucket":1}`, false},
		{"trailing comma", anyObs, `{"id":"x",}`, false},
		{"leading comma", anyObs, `{,"id":"x"}`, false},
		{"unquoted key", anyObs, `{id:"x"}`, false},
		{"single quotes", anyObs, `{'id':'x'}`, false},
		{"form feed as space", anyObs, "{\f}", false},
		{"negative bucket", onlyObs, edit(obs, `"bucket":`, `"bucket":-`), true},
		{"double minus", anyObs, edit(obs, `"bucket":`, `"bucket":--`), false},
		{"observation, upper-case key", anyObs, edit(obs, `"region"`, `"REGION"`), false},
		{"observation, escaped region", anyObs, edit(obs, `"region":"eu"`, `"region":"\u0065u"`), true},
	} {
		var targets []func() Message
		switch c.target {
		case anyObs:
			targets = decodeTargets(&Observation{})
		case onlyObs:
			targets = []func() Message{func() Message { return &Observation{} }}
		case onlySum:
			targets = []func() Message{func() Message { return &ObservationSummary{} }}
		case onlyCmd:
			targets = decodeTargets(&CheckCommand{})
		}
		for _, newV := range targets {
			t.Run(c.name+"/"+reflect.TypeOf(newV()).Elem().Name(), func(t *testing.T) {
				if fast := checkFastDecode(t, []byte(c.in), newV); fast != c.fast {
					t.Errorf("fast path taken: %v, want %v", fast, c.fast)
				}
			})
		}
	}
}

// startingValues are values to decode into beyond the zero ones: json.Unmarshal
// keeps the fields whose keys are absent, and the fast path must too. Values
// holding maps, slices or pointers, which json.Unmarshal writes into, are
// declined by the fast path.
func startingValues() []struct {
	name    string
	newV    func() Message
	canFast bool
} {
	scalarObs := func() Message {
		o := benchObservation()
		o.TLS, o.RedirectChain = nil, nil
		o.Timings.TLSMs = math.Copysign(0, -1)
		return o
	}
	scalarCmd := func() Message {
		c := benchCheckCommand()
		c.Check.Headers, c.Check.ExpectStatus, c.Check.Keywords = nil, nil, nil
		return c
	}
	return []struct {
		name    string
		newV    func() Message
		canFast bool
	}{
		{"observation scalars", scalarObs, true},
		{"summary scalars", func() Message { s := benchObservation().Summary(); s.TLS = nil; return s }, true},
		{"command scalars", scalarCmd, true},
		{"observation with tls", func() Message { return benchObservation() }, false},
		{"observation with chain", func() Message { o := &Observation{}; o.RedirectChain = []string{}; return o }, false},
		{"summary with tls", func() Message { return benchObservation().Summary() }, false},
		{"command with headers", func() Message { return benchCheckCommand() }, false},
	}
}

// TestFastDecodeMerges: decoding into a value that is not zero keeps the
// fields the input does not name, as json.Unmarshal does; a value with
// maps, slices or pointers is left to json.Unmarshal.
func TestFastDecodeMerges(t *testing.T) {
	for _, sv := range startingValues() {
		for _, in := range []string{`{}`, `{"id":"new","timings":{"dns_ms":2}}`, `{"check":{"url":"u"},"bucket":7}`, `{"tls":{"not_after":"2030-01-01T00:00:00Z"}}`} {
			t.Run(sv.name+"/"+in, func(t *testing.T) {
				if fast := checkFastDecode(t, []byte(in), sv.newV); fast && !sv.canFast {
					t.Errorf("fast path took a value holding references")
				}
			})
		}
	}
}

// TestFastDecodeDeclinesReferences sets each map, slice and pointer field of
// the decoded types, one at a time, and checks that the fast path then
// declines: json.Unmarshal would write into them, which the fast path does
// not reproduce. It finds the fields by reflection, so a new one is covered.
func TestFastDecodeDeclinesReferences(t *testing.T) {
	data, err := json.Marshal(benchObservation())
	if err != nil {
		t.Fatal(err)
	}
	cmdData, err := json.Marshal(benchCheckCommand())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		v    Message
		data []byte
	}{{&Observation{}, data}, {&ObservationSummary{}, data}, {&CheckCommand{}, cmdData}} {
		if !decodeFast(c.data, newMessageLike(c.v)) {
			t.Fatalf("%T: the fast path declined the sample", c.v)
		}
		forEachReference(reflect.ValueOf(newMessageLike(c.v)).Elem(), func(path string, set func(reflect.Value)) {
			v := newMessageLike(c.v)
			set(reflect.ValueOf(v).Elem())
			if decodeFast(c.data, v) {
				t.Errorf("%T with %s set: the fast path took it", c.v, path)
			}
		})
	}
}

// forEachReference calls f for each map, slice or pointer field of the struct
// v, nested structs included, with a function that sets that field of a value
// of v's type to a new empty map, slice or value.
func forEachReference(v reflect.Value, f func(path string, set func(reflect.Value))) {
	var walk func(t reflect.Type, path string, index []int)
	walk = func(t reflect.Type, path string, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			idx := append(append([]int(nil), index...), i)
			switch sf.Type.Kind() {
			case reflect.Map, reflect.Slice, reflect.Pointer:
				f(path+sf.Name, func(root reflect.Value) {
					fv := root.FieldByIndex(idx)
					switch sf.Type.Kind() {
					case reflect.Map:
						fv.Set(reflect.MakeMap(sf.Type))
					case reflect.Slice:
						fv.Set(reflect.MakeSlice(sf.Type, 0, 0))
					default:
						fv.Set(reflect.New(sf.Type.Elem()))
					}
				})
			case reflect.Struct:
				if sf.Type != reflect.TypeFor[time.Time]() {
					walk(sf.Type, path+sf.Name+".", idx)
				}
			}
		}
	}
	walk(v.Type(), "", nil)
}

// TestFastJSONFieldLists: the field lists decodeFast looks keys up in are the
// structs' own JSON names, in order, so that no key encoding/json would read
// is skipped as unknown; and no type on the fast path has grown a
// (Un)Marshaler method the fast path would not call.
func TestFastJSONFieldLists(t *testing.T) {
	for _, c := range []struct {
		t      reflect.Type
		fields []string
	}{
		{reflect.TypeFor[Observation](), observationFields},
		{reflect.TypeFor[ObservationSummary](), summaryFields},
		{reflect.TypeFor[Timings](), timingsFields},
		{reflect.TypeFor[TLSInfo](), tlsInfoFields},
		{reflect.TypeFor[CertExpiry](), certExpiryFields},
		{reflect.TypeFor[CheckCommand](), commandFields},
		{reflect.TypeFor[CheckBatch](), batchFields},
		{reflect.TypeFor[CheckSpec](), checkSpecFields},
	} {
		var names []string
		for i := range c.t.NumField() {
			sf := c.t.Field(i)
			name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if !sf.IsExported() || sf.Anonymous || name == "" || name == "-" || (opts != "" && opts != "omitempty") {
				t.Errorf("%s.%s: the fast path knows only exported, named fields with at most omitempty", c.t.Name(), sf.Name)
			}
			names = append(names, name)
		}
		if !reflect.DeepEqual(names, c.fields) {
			t.Errorf("%s: JSON names %q, fast path's list %q", c.t.Name(), names, c.fields)
		}
		if len(c.fields) > 64 {
			t.Errorf("%s: %d fields, more than object's 64-bit set", c.t.Name(), len(c.fields))
		}
	}
	// Only time.Time (json) and Duration (text) have methods of their own,
	// which the fast path calls.
	for _, typ := range []reflect.Type{
		reflect.TypeFor[Observation](), reflect.TypeFor[ObservationSummary](), reflect.TypeFor[Timings](),
		reflect.TypeFor[TLSInfo](), reflect.TypeFor[CertExpiry](), reflect.TypeFor[CheckCommand](),
		reflect.TypeFor[CheckBatch](), reflect.TypeFor[CheckSpec](), reflect.TypeFor[Purpose](), reflect.TypeFor[Class](),
		reflect.TypeFor[RedirectPolicy](), reflect.TypeFor[Duration](),
	} {
		for _, iface := range []reflect.Type{
			reflect.TypeFor[json.Marshaler](), reflect.TypeFor[json.Unmarshaler](),
			reflect.TypeFor[encoding.TextMarshaler](), reflect.TypeFor[encoding.TextUnmarshaler](),
		} {
			has := typ.Implements(iface) || reflect.PointerTo(typ).Implements(iface)
			want := typ == reflect.TypeFor[Duration]() && strings.Contains(iface.String(), "Text")
			if has != want {
				t.Errorf("%s implements %s: %v, the fast path assumes %v", typ.Name(), iface, has, want)
			}
		}
	}
}

// TestFastMarshalCases compares the fast encoder with json.Marshal on values
// with every kind of string, number and time it must write as encoding/json
// does, and pins the values it must decline (json.Marshal refuses them).
func TestFastMarshalCases(t *testing.T) {
	obs := func(f func(*Observation)) Message { o := benchObservation(); f(o); return o }
	cmd := func(f func(*CheckCommand)) Message { c := benchCheckCommand(); f(c); return c }
	ist := time.FixedZone("IST", 5*3600+1800)
	for _, c := range []struct {
		name string
		m    Message
		fast bool
	}{
		{"observation", benchObservation(), true},
		{"command", benchCheckCommand(), true},
		{"zero observation", &Observation{}, true},
		{"zero command", &CheckCommand{}, true},
		{"escapes", obs(func(o *Observation) { o.Error = "a\"b\\c/d\b\f\n\r\t\x00\x01\x1f\x7f" }), true},
		{"HTML", obs(func(o *Observation) { o.FinalURL = "https://a/?b=1&c=<d>" }), true},
		{"unicode", obs(func(o *Observation) { o.Error = "café ☕ 😀 \u2028\u2029 \ufffd" }), true},
		{"invalid UTF-8", obs(func(o *Observation) { o.Error = "a\xffb\xc3 \xed\xa0\x80 \xf4\x90\x80\x80 end\xe2\x82" }), true},
		{"odd strings everywhere", obs(func(o *Observation) {
			o.ID, o.SiteID, o.Region, o.CheckerID, o.CommandID = odd, odd, odd, odd, odd
			o.Purpose, o.Class, o.IncidentID = Purpose(odd), Class(odd), odd
			o.RedirectChain = []string{odd, "", "<&>"}
			o.TLS.Version, o.TLS.Issuer, o.TLS.Subject, o.TLS.VerifyError = odd, odd, odd, odd
		}), true},
		{"empty strings", obs(func(o *Observation) { o.FinalURL, o.Error, o.ID = "", "", "" }), true},
		{"empty chain", obs(func(o *Observation) { o.RedirectChain = []string{} }), true},
		{"chain", obs(func(o *Observation) { o.RedirectChain = []string{"https://a/", "https://b/"} }), true},
		{"no tls", obs(func(o *Observation) { o.TLS = nil }), true},
		{"zero tls", obs(func(o *Observation) { o.TLS = &TLSInfo{} }), true},
		{"negative numbers", obs(func(o *Observation) {
			o.Bucket, o.StatusCode, o.ConfigSeq = -1, math.MinInt64, math.MaxUint64
			o.Timings = Timings{DNSMs: -1.5, ConnectMs: math.Copysign(0, -1), TLSMs: -1e-7, TTFBMs: -1e21, TotalMs: -math.MaxFloat64}
		}), true},
		{"float cut-offs", obs(func(o *Observation) {
			o.Timings = Timings{DNSMs: 1e-6, ConnectMs: math.Nextafter(1e-6, 0), TLSMs: 1e21, TTFBMs: math.Nextafter(1e21, 0), TotalMs: 1e20}
		}), true},
		{"float exponents", obs(func(o *Observation) {
			o.Timings = Timings{DNSMs: 1e-9, ConnectMs: 1e-10, TLSMs: 5e-324, TTFBMs: 1.2345e-100, TotalMs: 1e300}
		}), true},
		{"float fractions", obs(func(o *Observation) {
			o.Timings = Timings{DNSMs: 0.1, ConnectMs: 1.0 / 3, TLSMs: 123456.789, TTFBMs: 100, TotalMs: float64(1 << 53)}
		}), true},
		{"NaN", obs(func(o *Observation) { o.Timings.TLSMs = math.NaN() }), false},
		{"+Inf", obs(func(o *Observation) { o.Timings.TotalMs = math.Inf(1) }), false},
		{"-Inf", obs(func(o *Observation) { o.Timings.DNSMs = math.Inf(-1) }), false},
		{"zero times", obs(func(o *Observation) { o.StartedAt, o.DueAt, o.TLS.NotBefore = time.Time{}, time.Time{}, time.Time{} }), true},
		{"non-UTC times", obs(func(o *Observation) {
			o.StartedAt = o.StartedAt.In(ist)
			o.DueAt = time.Date(2026, 1, 1, 0, 0, 0, 1, time.FixedZone("", -(23*3600+59*60)))
			o.TLS.NotAfter = o.StartedAt.Local()
		}), true},
		{"offset with seconds", obs(func(o *Observation) { o.StartedAt = o.StartedAt.In(time.FixedZone("", 3600+59)) }), true},
		{"monotonic clock", obs(func(o *Observation) { o.StartedAt = time.Now() }), true},
		{"year 0", obs(func(o *Observation) { o.StartedAt = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) }), true},
		{"year 9999", obs(func(o *Observation) { o.StartedAt = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC) }), true},
		{"year 10000", obs(func(o *Observation) { o.StartedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), false},
		{"year -1", obs(func(o *Observation) { o.DueAt = time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC) }), false},
		{"year 0 by offset", obs(func(o *Observation) {
			o.TLS.NotBefore = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).In(time.FixedZone("", -3600))
		}), false},
		{"offset of 24 hours", obs(func(o *Observation) { o.StartedAt = o.StartedAt.In(time.FixedZone("", 24*3600)) }), false},
		{"offset of 100 hours", cmd(func(c *CheckCommand) { c.Deadline = c.Deadline.In(time.FixedZone("", -100*3600)) }), false},
		{"odd command", cmd(func(c *CheckCommand) {
			c.ID, c.SiteID, c.Region, c.IncidentID, c.Purpose = odd, odd, odd, odd, Purpose(odd)
			c.Check.URL, c.Check.Method, c.Check.Redirects = odd, odd, RedirectPolicy(odd)
			c.Check.Keywords, c.Check.ForbiddenKeywords, c.Check.LastRedirectChain = []string{odd}, []string{"<b>", ""}, []string{"x"}
		}), true},
		{"headers", cmd(func(c *CheckCommand) {
			c.Check.Headers = map[string]string{"b": "1", "a": "<2>", "A": odd, odd: "", "": "e", "\u00e9": "\u2028", "a\xff": "x"}
		}), true},
		{"many headers", cmd(func(c *CheckCommand) {
			c.Check.Headers = map[string]string{}
			for i := range 40 {
				c.Check.Headers[strings.Repeat("h", i%7)+string(rune('z'-i))] = strings.Repeat("v", i)
			}
		}), true},
		{"empty headers", cmd(func(c *CheckCommand) { c.Check.Headers = map[string]string{} }), true},
		{"empty lists", cmd(func(c *CheckCommand) { c.Check.ExpectStatus, c.Check.Keywords = []int{}, []string{} }), true},
		{"negative statuses", cmd(func(c *CheckCommand) { c.Check.ExpectStatus = []int{-1, 0, math.MaxInt64} }), true},
		{"durations", cmd(func(c *CheckCommand) { c.Check.Timeout = Duration(90*time.Minute + 1) }), true},
		{"negative duration", cmd(func(c *CheckCommand) { c.Check.Timeout = Duration(-time.Hour) }), true},
		{"smallest duration", cmd(func(c *CheckCommand) { c.Check.Timeout = Duration(math.MinInt64) }), true},
		{"zero duration", cmd(func(c *CheckCommand) { c.Check.Timeout = 0 }), true},
		{"command year 10000", cmd(func(c *CheckCommand) { c.DueAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := checkFastMarshal(t, c.m)
			if _, fast := marshalJSONFast(c.m); fast != c.fast {
				t.Errorf("fast path taken: %v, want %v", fast, c.fast)
			}
			if data == nil {
				return
			}
			// What the fast path writes, it reads (where json.Unmarshal can).
			for _, newV := range decodeTargets(c.m) {
				if fast := checkFastDecode(t, data, newV); !fast && json.Unmarshal(data, newV()) == nil {
					t.Errorf("the fast path declined its own output as %T: %s", newV(), data)
				}
			}
		})
	}
}

// TestFastMarshalOthersDecline: messages other than observations and
// commands go to json.Marshal, and so does a nil message.
func TestFastMarshalOthersDecline(t *testing.T) {
	for _, m := range []Message{&SiteEvent{}, &RegionEvent{}, &SiteChange{}, &ObservationSummary{}, (*Observation)(nil), (*CheckCommand)(nil), (*CheckBatch)(nil)} {
		if _, fast := marshalJSONFast(m); fast {
			t.Errorf("%T: the fast path took it", m)
		}
	}
	for _, m := range []Message{&SiteEvent{}, (*Observation)(nil), (*CheckCommand)(nil), (*ObservationSummary)(nil),
		(*CheckBatch)(nil), &CheckBatch{Commands: []CheckCommand{}}} {
		if decodeFast([]byte(`{}`), m) {
			t.Errorf("%T: the fast decoder took it", m)
		}
	}
}

// TestFastMarshalReusesBuffers: encoding after a refused value or a large one
// starts clean (the encoder pool hands out reset encoders).
func TestFastMarshalReusesBuffers(t *testing.T) {
	nan := benchObservation()
	nan.Timings.TotalMs = math.NaN()
	big := benchObservation()
	big.Error = strings.Repeat("x", 2*maxPooledBuffer)
	for range 3 {
		for _, m := range []Message{nan, big, benchObservation(), benchCheckCommand()} {
			checkFastMarshal(t, m)
		}
	}
}

// FuzzFastDecode compares decodeFast with json.Unmarshal on arbitrary input,
// for each type the fast path decodes and each kind of starting value
// (startingValues): whenever the fast path takes an input, json.Unmarshal
// must succeed on it and leave the same value; when it declines, it must
// leave the value untouched.
func FuzzFastDecode(f *testing.F) {
	for _, s := range codecSamples() {
		if decodeTargets(s.msg) == nil {
			continue
		}
		data, err := json.Marshal(s.msg)
		if err != nil {
			continue
		}
		f.Add(data, uint8(0))
		f.Add(data, uint8(1))
		// Mutations of a real message: the shapes the fast path must decline
		// or read exactly.
		for _, m := range [][2]string{
			{`"id"`, `"ID"`}, {`"id":"`, `"id":null,"x":"`}, {`"bucket":`, `"bucket":-`},
			{`"timings":{`, `"timings":{"dns_ms":1e400,`}, {`"`, `"\u00e9`}, {`,`, ` , `},
			{`"region"`, `"regio\u006e"`}, {`}`, `,"id":"dup"}`}, {`"dns_ms":`, `"dns_ms":-0.0e-0`},
			{`"class":"`, `"class":"\ud800\udc00`}, {`Z"`, `+05:30"`}, {`"tls":{`, `"tls":{"x":[{},[]],`},
		} {
			f.Add(bytes.Replace(data, []byte(m[0]), []byte(m[1]), 1), uint8(2))
		}
	}
	f.Add([]byte(`{"id":"\ud83d\ude00\ud83d","started_at":"2026-01-01T00:00:00Z","status_code":200}`), uint8(3))
	f.Add([]byte(`{"check":{"headers":{"a":"1","a":"2"},"expect_status":[],"timeout":"1s"}}`), uint8(4))
	f.Add([]byte("{\"error\":\"\xff\\u0041\"}  "), uint8(5))
	targets := []func() Message{
		func() Message { return &Observation{} },
		func() Message { return &ObservationSummary{} },
		func() Message { return &CheckCommand{} },
		func() Message { return &CheckBatch{} },
	}
	starts := startingValues()
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		for _, newV := range targets {
			checkFastDecode(t, data, newV)
		}
		checkFastDecode(t, data, starts[int(which)%len(starts)].newV)
	})
}

// FuzzFastEncode compares marshalJSONFast with json.Marshal on observations
// and commands built from arbitrary strings, numbers and times: the bytes
// must be the same, and the fast path may decline only a value json.Marshal
// refuses. The output must decode on the fast path as json.Unmarshal decodes
// it.
func FuzzFastEncode(f *testing.F) {
	f.Add("shop-eu", "https://shop.example.com/health", "status 503", 1.5, 20.0, int64(503), uint64(4242), int64(1795400100123456789), int32(0), int64(10e9))
	f.Add(odd, "<a href=\"&\">\u2028\u2029</a>", "\xff\xfe\xed\xa0\x80", math.Copysign(0, -1), 1e21, int64(-1), uint64(math.MaxUint64), int64(0), int32(19800), int64(-1))
	f.Add("", "\x00\x1f\x7f", "é", 1e-7, 123456789.125, int64(math.MinInt64), uint64(0), int64(-62135596800000000), int32(-86399), int64(math.MinInt64))
	f.Add("a\nb", "x", "y", math.NaN(), math.Inf(1), int64(0), uint64(1), int64(253402300800000000), int32(86400), int64(0))
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, f1, f2 float64, n int64, u uint64, unixNano int64, offset int32, dur int64) {
		at := time.Unix(0, unixNano).In(time.FixedZone(s3, int(offset)))
		if unixNano == 0 {
			at = time.Time{}
		}
		o := benchObservation()
		o.ID, o.SiteID, o.Error, o.FinalURL, o.Purpose, o.Class = s1, s2, s3, s1+s2, Purpose(s2), Class(s3)
		o.Bucket, o.StatusCode, o.ConfigSeq = int(n), int(n>>1), u
		o.Timings = Timings{DNSMs: f1, ConnectMs: f2, TLSMs: f1 * f2, TTFBMs: -f1, TotalMs: f1 / 3}
		o.StartedAt, o.DueAt, o.TLS.NotAfter = at, at.UTC(), at.Add(time.Duration(dur))
		o.TLS.Issuer, o.TLS.VerifyError = s2, s1
		if n%2 == 0 {
			o.TLS, o.IncidentID = nil, s3
		}
		if s1 != "" {
			o.RedirectChain = strings.Split(s1, "/")
		}
		c := benchCheckCommand()
		c.ID, c.SiteID, c.Region, c.Purpose, c.IncidentID = s1, s2, s3, Purpose(s1), s2
		c.Bucket, c.ConfigSeq = int(n), u
		c.DueAt, c.Deadline = at, at.Add(time.Duration(dur))
		c.Check.URL, c.Check.Method, c.Check.Timeout, c.Check.Redirects = s2, s3, Duration(dur), RedirectPolicy(s3)
		c.Check.Headers = map[string]string{s1: s2, s2: s3, s3: s1}
		c.Check.ExpectStatus = []int{int(n), int(u), 200}
		c.Check.Keywords, c.Check.ForbiddenKeywords = strings.Fields(s2), strings.Fields(s3)
		c.Check.LastRedirectChain, c.Check.TLSVerify = o.RedirectChain, n < 0
		if s3 == "" {
			c.Check.Headers = nil
		}
		for _, m := range []Message{o, c} {
			data := checkFastMarshal(t, m)
			if data == nil {
				continue
			}
			for _, newV := range decodeTargets(m) {
				if fast := checkFastDecode(t, data, newV); !fast && json.Unmarshal(data, newV()) == nil {
					t.Errorf("the fast path declined its own output as %T: %s", newV(), data)
				}
			}
		}
	})
}
