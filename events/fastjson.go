package events

import (
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is the fast JSON path for the messages on the per-check path: the
// data of check commands and observations is written (marshalJSONFast) and read
// (decodeFast) without encoding/json's reflection. encoding/json stays the
// reference and the fallback, and the fast path is held to it exactly:
//
//   - marshalJSONFast gives the bytes json.Marshal gives, or declines (for a
//     value json.Marshal refuses: a NaN or infinite float, a time it cannot
//     write as RFC 3339), and the caller asks json.Marshal, which then
//     returns its own error.
//   - decodeFast reads only what it is sure of: JSON in the shape Vigil
//     writes, into a value that holds no maps, slices or pointers. Whenever it
//     reports true, the value is what json.Unmarshal would have made of the
//     same input and starting value, and json.Unmarshal would have returned
//     no error. Anything else (a syntax error, a null, a key encoding/json
//     might fold onto a field name, a duplicate key, a type mismatch, a number
//     out of range, a time or duration the type's own method refuses) makes
//     it decline with the value untouched, and the caller uses
//     json.Unmarshal, which gives its own result and error.
//
// Wherever encoding/json calls a method of the type (time.Time.UnmarshalJSON,
// Duration.UnmarshalText and MarshalText), the fast path calls the same method
// with the same bytes. The rest reproduces encoding/json's own code: string
// unquoting (unquote), string escaping (appendString), float formatting
// (float), and time.Time.MarshalJSON's range check (time). fastjson_test.go
// compares the two on table cases and under differential fuzzing
// (FuzzFastDecode, FuzzFastEncode), and checks that the field lists here are
// the structs' own.
//
// The encoding/json reproduced is the one Go builds by default. Under
// GOEXPERIMENT=jsonv2, json.Marshal writes invalid UTF-8 as a raw U+FFFD
// rather than as \ufffd; the tests fail on that, so such a build must not
// use this file as it is.

// The JSON names of the fields of each struct the fast path reads, in
// declaration order. decodeFast looks keys up here; fastjson_test.go checks
// them against the struct tags, so a field added to a struct and not to its
// list fails the tests rather than being silently skipped.
var (
	observationFields = []string{
		"id", "site_id", "bucket", "region", "checker_id", "command_id", "purpose",
		"incident_id", "config_seq", "due_at", "started_at", "class", "status_code",
		"timings", "final_url", "redirect_chain", "tls", "error",
	}
	summaryFields = []string{
		"id", "site_id", "region", "purpose", "started_at", "class", "status_code",
		"timings", "tls",
	}
	timingsFields    = []string{"dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms"}
	tlsInfoFields    = []string{"version", "issuer", "subject", "not_before", "not_after", "chain_valid", "verify_error"}
	certExpiryFields = []string{"not_after"}
	commandFields    = []string{
		"id", "site_id", "bucket", "region", "purpose", "due_at", "deadline",
		"incident_id", "config_seq", "check",
	}
	batchFields     = []string{"id", "region", "commands"}
	checkSpecFields = []string{
		"url", "method", "timeout", "headers", "expect_status", "keywords",
		"forbidden_keywords", "redirects", "tls_verify", "last_redirect_chain",
	}
)

// The values of the string enums, which the decoder hands out as the
// constants themselves instead of allocating a copy of each.
var (
	knownPurposes  = []Purpose{PurposeScheduled, PurposeRetry, PurposeVerify}
	knownRedirects = []RedirectPolicy{RedirectFollow, RedirectFail, RedirectAlert}
	knownClasses   = []Class{
		ClassOK, ClassDNSNXDomain, ClassConnectRefused, ClassConnectTimeout, ClassTimeout,
		ClassTLSHandshake, ClassTLSExpired, ClassTLSUntrusted, ClassHTTPStatus,
		ClassKeywordMissing, ClassKeywordForbidden, ClassRedirectPolicy, ClassRedirectLoop,
		ClassBodyRead, ClassMonitorResolver, ClassMonitorNetwork, ClassCommandExpired,
		ClassMonitorOverload, ClassTargetRefused,
	}
)

// Decode.

// decodeFast decodes data into v, reporting whether it did. It handles
// *ObservationSummary, *Observation, *CheckCommand and *CheckBatch whose maps, slices and
// pointers are nil (as a fresh value's are), and reports false, leaving v
// untouched, for any other v or any input it is not sure to read exactly as
// json.Unmarshal would. On true, v is what json.Unmarshal(data, v) would have
// left, and json.Unmarshal would have returned nil.
//
// data must be one JSON object and nothing else but white space. It is
// decoded into a copy of *v, which is stored only on success, so a failure
// leaves v as it was. Starting from a copy rather than a zero value gives
// json.Unmarshal's merging: the fields whose keys are absent keep their
// values. (v holds no maps, slices or pointers, which json.Unmarshal would add
// to or write into, so the copy shares nothing mutable with v; a time.Time's
// *Location is never written through.)
func decodeFast(data []byte, v Message) bool {
	d := decoder{data: data}
	switch m := v.(type) {
	case *ObservationSummary:
		if m == nil || m.TLS != nil {
			return false
		}
		tmp := *m
		if !d.summary(&tmp) || !d.atEnd() {
			return false
		}
		*m = tmp
	case *Observation:
		if m == nil || m.RedirectChain != nil || m.TLS != nil {
			return false
		}
		tmp := *m
		if !d.observation(&tmp) || !d.atEnd() {
			return false
		}
		*m = tmp
	case *CheckCommand:
		if m == nil || !m.Check.referencesNil() {
			return false
		}
		tmp := *m
		if !d.checkCommand(&tmp) || !d.atEnd() {
			return false
		}
		*m = tmp
	case *CheckBatch:
		if m == nil || m.Commands != nil {
			return false
		}
		tmp := *m
		if !d.checkBatch(&tmp) || !d.atEnd() {
			return false
		}
		*m = tmp
	default:
		return false
	}
	return true
}

// referencesNil reports whether s holds no maps or slices.
func (s *CheckSpec) referencesNil() bool {
	return s.Headers == nil && s.ExpectStatus == nil && s.Keywords == nil &&
		s.ForbiddenKeywords == nil && s.LastRedirectChain == nil
}

// decoder reads JSON from data. Its methods report false on anything they do
// not read exactly as encoding/json would, including every syntax error; the
// caller then gives up.
type decoder struct {
	data []byte
	pos  int
}

// maxSkipDepth bounds the nesting of unknown values the decoder skips; deeper
// ones are left to encoding/json (whose own limit is 10000).
const maxSkipDepth = 64

// summary reads the JSON of an Observation (or an ObservationSummary) into an
// ObservationSummary.
func (d *decoder) summary(s *ObservationSummary) bool {
	return d.object(summaryFields, func(name string) bool {
		switch name {
		case "id":
			return d.str(&s.ID)
		case "site_id":
			return d.str(&s.SiteID)
		case "region":
			return d.str(&s.Region)
		case "purpose":
			return decodeEnum(d, &s.Purpose, knownPurposes)
		case "started_at":
			return d.time(&s.StartedAt)
		case "class":
			return decodeEnum(d, &s.Class, knownClasses)
		case "status_code":
			return d.int(&s.StatusCode)
		case "timings":
			return d.timings(&s.Timings)
		case "tls":
			s.TLS = new(CertExpiry)
			return d.certExpiry(s.TLS)
		}
		return false
	})
}

func (d *decoder) certExpiry(c *CertExpiry) bool {
	return d.object(certExpiryFields, func(name string) bool {
		switch name {
		case "not_after":
			return d.time(&c.NotAfter)
		}
		return false
	})
}

func (d *decoder) observation(o *Observation) bool {
	return d.object(observationFields, func(name string) bool {
		switch name {
		case "id":
			return d.str(&o.ID)
		case "site_id":
			return d.str(&o.SiteID)
		case "bucket":
			return d.int(&o.Bucket)
		case "region":
			return d.str(&o.Region)
		case "checker_id":
			return d.str(&o.CheckerID)
		case "command_id":
			return d.str(&o.CommandID)
		case "purpose":
			return decodeEnum(d, &o.Purpose, knownPurposes)
		case "incident_id":
			return d.str(&o.IncidentID)
		case "config_seq":
			return d.uint64(&o.ConfigSeq)
		case "due_at":
			return d.time(&o.DueAt)
		case "started_at":
			return d.time(&o.StartedAt)
		case "class":
			return decodeEnum(d, &o.Class, knownClasses)
		case "status_code":
			return d.int(&o.StatusCode)
		case "timings":
			return d.timings(&o.Timings)
		case "final_url":
			return d.str(&o.FinalURL)
		case "redirect_chain":
			return d.strs(&o.RedirectChain)
		case "tls":
			o.TLS = new(TLSInfo)
			return d.tlsInfo(o.TLS)
		case "error":
			return d.str(&o.Error)
		}
		return false
	})
}

func (d *decoder) timings(t *Timings) bool {
	return d.object(timingsFields, func(name string) bool {
		switch name {
		case "dns_ms":
			return d.float(&t.DNSMs)
		case "connect_ms":
			return d.float(&t.ConnectMs)
		case "tls_ms":
			return d.float(&t.TLSMs)
		case "ttfb_ms":
			return d.float(&t.TTFBMs)
		case "total_ms":
			return d.float(&t.TotalMs)
		}
		return false
	})
}

func (d *decoder) tlsInfo(t *TLSInfo) bool {
	return d.object(tlsInfoFields, func(name string) bool {
		switch name {
		case "version":
			return d.str(&t.Version)
		case "issuer":
			return d.str(&t.Issuer)
		case "subject":
			return d.str(&t.Subject)
		case "not_before":
			return d.time(&t.NotBefore)
		case "not_after":
			return d.time(&t.NotAfter)
		case "chain_valid":
			return d.bool(&t.ChainValid)
		case "verify_error":
			return d.str(&t.VerifyError)
		}
		return false
	})
}

func (d *decoder) checkBatch(b *CheckBatch) bool {
	return d.object(batchFields, func(name string) bool {
		switch name {
		case "id":
			return d.str(&b.ID)
		case "region":
			return d.str(&b.Region)
		case "commands":
			list := []CheckCommand{}
			ok := d.array(func() bool {
				list = append(list, CheckCommand{})
				return d.checkCommand(&list[len(list)-1])
			})
			b.Commands = list
			return ok
		}
		return false
	})
}

func (d *decoder) checkCommand(c *CheckCommand) bool {
	return d.object(commandFields, func(name string) bool {
		switch name {
		case "id":
			return d.str(&c.ID)
		case "site_id":
			return d.str(&c.SiteID)
		case "bucket":
			return d.int(&c.Bucket)
		case "region":
			return d.str(&c.Region)
		case "purpose":
			return decodeEnum(d, &c.Purpose, knownPurposes)
		case "due_at":
			return d.time(&c.DueAt)
		case "deadline":
			return d.time(&c.Deadline)
		case "incident_id":
			return d.str(&c.IncidentID)
		case "config_seq":
			return d.uint64(&c.ConfigSeq)
		case "check":
			return d.checkSpec(&c.Check)
		}
		return false
	})
}

func (d *decoder) checkSpec(s *CheckSpec) bool {
	return d.object(checkSpecFields, func(name string) bool {
		switch name {
		case "url":
			return d.str(&s.URL)
		case "method":
			return d.str(&s.Method)
		case "timeout":
			return d.duration(&s.Timeout)
		case "headers":
			return d.strMap(&s.Headers)
		case "expect_status":
			return d.ints(&s.ExpectStatus)
		case "keywords":
			return d.strs(&s.Keywords)
		case "forbidden_keywords":
			return d.strs(&s.ForbiddenKeywords)
		case "redirects":
			return decodeEnum(d, &s.Redirects, knownRedirects)
		case "tls_verify":
			return d.bool(&s.TLSVerify)
		case "last_redirect_chain":
			return d.strs(&s.LastRedirectChain)
		}
		return false
	})
}

// object reads a JSON object into a struct whose fields have the JSON names
// fields, calling field with the name for each key that is one of them, to
// read the value into that field. It declines, as encoding/json's merging and
// matching would take more than this to reproduce, on:
//   - a key that is not plain ASCII (keyToken), which encoding/json would
//     unescape and might fold onto a field name;
//   - an unknown key that matches a field name but for case, which
//     encoding/json would decode into that field;
//   - a key seen before, whose second value encoding/json would merge into
//     the first.
//
// Other unknown keys are skipped, as encoding/json skips them, once their
// values are checked to be valid JSON.
func (d *decoder) object(fields []string, field func(name string) bool) bool {
	if !d.eat('{') {
		return false
	}
	if d.eat('}') {
		return true
	}
	var seen uint64 // bit i: fields[i] was read; the tests keep len(fields) <= 64
	for {
		key, ok := d.keyToken()
		if !ok || !d.eat(':') {
			return false
		}
		switch i := fieldIndex(fields, key); {
		case i < 0:
			if foldsOntoAny(key, fields) || !d.skipValue(0) {
				return false
			}
		case seen&(1<<i) != 0:
			return false
		default:
			seen |= 1 << i
			if !field(fields[i]) {
				return false
			}
		}
		if !d.eat(',') {
			return d.eat('}')
		}
	}
}

// fieldIndex returns the index of key in fields, or -1.
func fieldIndex(fields []string, key []byte) int {
	for i, f := range fields {
		if string(key) == f {
			return i
		}
	}
	return -1
}

// foldsOntoAny reports whether the ASCII key equals one of fields but for the
// case of letters: encoding/json's fallback match for a key that matches no
// field name exactly (foldName upper-cases ASCII letters).
func foldsOntoAny(key []byte, fields []string) bool {
	for _, f := range fields {
		if asciiEqualFold(key, f) {
			return true
		}
	}
	return false
}

func asciiEqualFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if upper(a[i]) != upper(b[i]) {
			return false
		}
	}
	return true
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// skipSpace moves past JSON white space.
func (d *decoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek returns the next byte after white space without reading it, or 0 at
// the end of the input (0 can only stand inside a JSON string, where peek is
// never used).
func (d *decoder) peek() byte {
	d.skipSpace()
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

// eat reads c, after white space, if it comes next.
func (d *decoder) eat(c byte) bool {
	if d.peek() == c {
		d.pos++
		return true
	}
	return false
}

// atEnd reports whether only white space is left.
func (d *decoder) atEnd() bool {
	d.skipSpace()
	return d.pos == len(d.data)
}

// keyToken reads an object key made only of printable ASCII without escapes,
// returning the bytes between the quotes, which are then the key itself.
func (d *decoder) keyToken() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start := d.pos
	for ; d.pos < len(d.data); d.pos++ {
		switch c := d.data[d.pos]; {
		case c == '"':
			d.pos++
			return d.data[start : d.pos-1], true
		case c == '\\' || c < ' ' || c >= utf8.RuneSelf:
			return nil, false
		}
	}
	return nil, false
}

// stringToken reads a JSON string, checking it as encoding/json's scanner
// does: no control characters, only the escapes \" \\ \/ \b \f \n \r \t and
// \u with four hex digits; any other byte, valid UTF-8 or not, is allowed. It
// returns the bytes between the quotes and whether they are plain (printable
// ASCII without escapes), and so already the string's value.
func (d *decoder) stringToken() (raw []byte, plain, ok bool) {
	if !d.eat('"') {
		return nil, false, false
	}
	start := d.pos
	plain = true
	for d.pos < len(d.data) {
		switch c := d.data[d.pos]; {
		case c == '"':
			d.pos++
			return d.data[start : d.pos-1], plain, true
		case c == '\\':
			plain = false
			if !d.escape() {
				return nil, false, false
			}
		case c < ' ':
			return nil, false, false
		default:
			if c >= utf8.RuneSelf {
				plain = false
			}
			d.pos++
		}
	}
	return nil, false, false
}

// escape reads one valid escape sequence, starting at its backslash.
func (d *decoder) escape() bool {
	rest := d.data[d.pos:]
	if len(rest) < 2 {
		return false
	}
	switch rest[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		d.pos += 2
		return true
	case 'u':
		if hex4(rest[2:]) < 0 {
			return false
		}
		d.pos += 6
		return true
	}
	return false
}

// hex4 returns the value of the four hex digits that b starts with, or -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// unquote returns the value of a JSON string whose contents raw passed
// stringToken, exactly as encoding/json's unquoteBytes makes it: escapes
// decoded, a \u escape holding a lone or mismatched UTF-16 surrogate replaced
// by U+FFFD (a following \u escape is then read on its own), and each byte of
// invalid UTF-8 replaced by U+FFFD.
func unquote(raw []byte) string {
	if utf8.Valid(raw) && !containsByte(raw, '\\') {
		return string(raw)
	}
	var buf [128]byte
	b := buf[:0]
	for r := 0; r < len(raw); {
		switch c := raw[r]; {
		case c == '\\':
			var rr rune
			rr, r = unescape(raw, r)
			b = utf8.AppendRune(b, rr)
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(raw[r:])
			b = utf8.AppendRune(b, rr)
			r += size
		}
	}
	return string(b)
}

// unescape decodes the valid escape sequence at raw[r] and returns the rune it
// stands for and the index after it: a \u escape of a UTF-16 high surrogate
// followed by a \u escape of a low one is one rune; any other surrogate is
// U+FFFD.
func unescape(raw []byte, r int) (rune, int) {
	switch raw[r+1] {
	case 'b':
		return '\b', r + 2
	case 'f':
		return '\f', r + 2
	case 'n':
		return '\n', r + 2
	case 'r':
		return '\r', r + 2
	case 't':
		return '\t', r + 2
	case 'u':
		rr := hex4(raw[r+2:])
		r += 6
		if !utf16.IsSurrogate(rr) {
			return rr, r
		}
		if r+1 < len(raw) && raw[r] == '\\' && raw[r+1] == 'u' {
			if dec := utf16.DecodeRune(rr, hex4(raw[r+2:])); dec != unicode.ReplacementChar {
				return dec, r + 6
			}
		}
		return unicode.ReplacementChar, r
	}
	return rune(raw[r+1]), r + 2 // '"', '\\' or '/'
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// str reads a JSON string into dst.
func (d *decoder) str(dst *string) bool {
	raw, plain, ok := d.stringToken()
	if !ok {
		return false
	}
	if plain {
		*dst = string(raw)
	} else {
		*dst = unquote(raw)
	}
	return true
}

// decodeEnum reads a JSON string into a string type, as str does, handing out
// the matching constant of known, if any, rather than a new copy.
func decodeEnum[T ~string](d *decoder, dst *T, known []T) bool {
	raw, plain, ok := d.stringToken()
	if !ok {
		return false
	}
	if !plain {
		*dst = T(unquote(raw))
		return true
	}
	for _, k := range known {
		if string(raw) == string(k) {
			*dst = k
			return true
		}
	}
	*dst = T(raw)
	return true
}

// time reads a JSON string into dst with time.Time's UnmarshalJSON, given the
// quoted bytes as encoding/json gives them (it does not unescape them).
func (d *decoder) time(dst *time.Time) bool {
	d.skipSpace()
	start := d.pos
	if _, _, ok := d.stringToken(); !ok {
		return false
	}
	return dst.UnmarshalJSON(d.data[start:d.pos]) == nil
}

// duration reads a JSON string into dst with Duration's UnmarshalText, given
// the unquoted string as encoding/json gives it.
func (d *decoder) duration(dst *Duration) bool {
	raw, plain, ok := d.stringToken()
	if !ok {
		return false
	}
	if !plain {
		raw = []byte(unquote(raw))
	}
	return dst.UnmarshalText(raw) == nil
}

// bool reads true or false.
func (d *decoder) bool(dst *bool) bool {
	switch d.peek() {
	case 't':
		*dst = true
		return d.literal("true")
	case 'f':
		*dst = false
		return d.literal("false")
	}
	return false
}

// literal reads the literal lit (true, false or null).
func (d *decoder) literal(lit string) bool {
	if len(d.data)-d.pos < len(lit) || string(d.data[d.pos:d.pos+len(lit)]) != lit {
		return false
	}
	d.pos += len(lit)
	return true
}

// number reads a JSON number, -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?,
// and returns it, and whether it is an integer: without a fraction or an
// exponent, which encoding/json refuses for an integer field.
func (d *decoder) number() (lit []byte, isInt, ok bool) {
	d.skipSpace()
	start := d.pos
	if d.next('-') {
		d.pos++
	}
	switch {
	case d.next('0'):
		d.pos++
	case d.pos < len(d.data) && '1' <= d.data[d.pos] && d.data[d.pos] <= '9':
		d.digits()
	default:
		return nil, false, false
	}
	isInt = true
	if d.next('.') {
		d.pos++
		if !d.digits() {
			return nil, false, false
		}
		isInt = false
	}
	if d.next('e') || d.next('E') {
		d.pos++
		if d.next('+') || d.next('-') {
			d.pos++
		}
		if !d.digits() {
			return nil, false, false
		}
		isInt = false
	}
	return d.data[start:d.pos], isInt, true
}

// next reports whether c is the next byte (white space included).
func (d *decoder) next(c byte) bool {
	return d.pos < len(d.data) && d.data[d.pos] == c
}

// digits reads [0-9]* and reports whether it read any.
func (d *decoder) digits() bool {
	start := d.pos
	for d.pos < len(d.data) && '0' <= d.data[d.pos] && d.data[d.pos] <= '9' {
		d.pos++
	}
	return d.pos > start
}

// int reads an integer into an int, as encoding/json does: strconv.ParseInt,
// and refused if it does not fit.
func (d *decoder) int(dst *int) bool {
	lit, isInt, ok := d.number()
	if !ok || !isInt {
		return false
	}
	n, err := strconv.ParseInt(string(lit), 10, strconv.IntSize)
	*dst = int(n)
	return err == nil
}

// uint64 reads an integer into a uint64, as encoding/json does:
// strconv.ParseUint, which refuses a sign, even on -0.
func (d *decoder) uint64(dst *uint64) bool {
	lit, isInt, ok := d.number()
	if !ok || !isInt {
		return false
	}
	n, err := strconv.ParseUint(string(lit), 10, 64)
	*dst = n
	return err == nil
}

// float reads a number into a float64, as encoding/json does:
// strconv.ParseFloat, which refuses a number out of range.
func (d *decoder) float(dst *float64) bool {
	lit, _, ok := d.number()
	if !ok {
		return false
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	*dst = f
	return err == nil
}

// strs reads an array of strings into a nil slice: a new slice, non-nil even
// for [], as encoding/json makes it.
func (d *decoder) strs(dst *[]string) bool {
	list := []string{}
	ok := d.array(func() bool {
		var s string
		ok := d.str(&s)
		list = append(list, s)
		return ok
	})
	*dst = list
	return ok
}

// ints reads an array of integers into a nil slice, as strs does.
func (d *decoder) ints(dst *[]int) bool {
	list := []int{}
	ok := d.array(func() bool {
		var n int
		ok := d.int(&n)
		list = append(list, n)
		return ok
	})
	*dst = list
	return ok
}

// array reads a JSON array, calling elem to read each element.
func (d *decoder) array(elem func() bool) bool {
	if !d.eat('[') {
		return false
	}
	if d.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if !d.eat(',') {
			return d.eat(']')
		}
	}
}

// strMap reads an object of strings into a nil map: a new map, non-nil even
// for {}, as encoding/json makes it. Keys are unquoted as values are, and a
// repeated key keeps its last value, as with encoding/json.
func (d *decoder) strMap(dst *map[string]string) bool {
	if d.peek() != '{' {
		return false
	}
	m := map[string]string{}
	*dst = m
	d.pos++
	if d.eat('}') {
		return true
	}
	for {
		var k, v string
		if !d.str(&k) || !d.eat(':') || !d.str(&v) {
			return false
		}
		m[k] = v
		if !d.eat(',') {
			return d.eat('}')
		}
	}
}

// skipValue reads any JSON value without decoding it, checking that it is
// valid JSON, as encoding/json checks the whole input before decoding any of
// it.
func (d *decoder) skipValue(depth int) bool {
	if depth > maxSkipDepth {
		return false
	}
	switch d.peek() {
	case '"':
		_, _, ok := d.stringToken()
		return ok
	case '{':
		d.pos++
		if d.eat('}') {
			return true
		}
		for {
			if _, _, ok := d.stringToken(); !ok || !d.eat(':') || !d.skipValue(depth+1) {
				return false
			}
			if !d.eat(',') {
				return d.eat('}')
			}
		}
	case '[':
		d.pos++
		if d.eat(']') {
			return true
		}
		for {
			if !d.skipValue(depth + 1) {
				return false
			}
			if !d.eat(',') {
				return d.eat(']')
			}
		}
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	_, _, ok := d.number()
	return ok
}

// Encode.

// marshalJSONFast returns json.Marshal(m), byte for byte, for an *Observation,
// *CheckCommand or *CheckBatch, and true. It returns false for any other message, and for
// a value json.Marshal refuses (a NaN or infinite float, a time outside the
// years 0 to 9999 or with a zone offset of a day or more), for the caller to
// ask json.Marshal, which returns its error.
func marshalJSONFast(m Message) ([]byte, bool) {
	e := encoderPool.Get().(*encoder)
	defer e.release()
	switch m := m.(type) {
	case *Observation:
		if m == nil {
			return nil, false
		}
		e.observation(m)
	case *CheckCommand:
		if m == nil {
			return nil, false
		}
		e.checkCommand(m)
	case *CheckBatch:
		if m == nil {
			return nil, false
		}
		e.checkBatch(m)
	default:
		return nil, false
	}
	if e.refused {
		return nil, false
	}
	// The buffer goes back to the pool; the caller keeps a copy of its size.
	return append([]byte(nil), e.buf...), true
}

// encoderPool holds encoders whose buffers have grown to the size of a
// message, so that encoding allocates only the result.
var encoderPool = sync.Pool{New: func() any { return &encoder{buf: make([]byte, 0, 1024)} }}

// maxPooledBuffer is the largest buffer an encoder takes back to the pool; an
// outsized message's buffer is left to the garbage collector.
const maxPooledBuffer = 64 << 10

// encoder appends JSON to buf as encoding/json writes it: struct fields in
// declaration order, omitempty fields left out when empty, map keys sorted,
// strings escaped for HTML.
type encoder struct {
	buf []byte
	// refused is set when json.Marshal would fail on the value.
	refused bool
}

// release resets e and returns it to the pool.
func (e *encoder) release() {
	if cap(e.buf) > maxPooledBuffer {
		return
	}
	e.buf, e.refused = e.buf[:0], false
	encoderPool.Put(e)
}

func (e *encoder) observation(o *Observation) {
	e.raw(`{"id":`)
	e.str(o.ID)
	e.raw(`,"site_id":`)
	e.str(o.SiteID)
	e.raw(`,"bucket":`)
	e.int(int64(o.Bucket))
	e.raw(`,"region":`)
	e.str(o.Region)
	e.raw(`,"checker_id":`)
	e.str(o.CheckerID)
	e.raw(`,"command_id":`)
	e.str(o.CommandID)
	e.raw(`,"purpose":`)
	e.str(string(o.Purpose))
	if o.IncidentID != "" {
		e.raw(`,"incident_id":`)
		e.str(o.IncidentID)
	}
	e.raw(`,"config_seq":`)
	e.uint(o.ConfigSeq)
	e.raw(`,"due_at":`)
	e.time(o.DueAt)
	e.raw(`,"started_at":`)
	e.time(o.StartedAt)
	e.raw(`,"class":`)
	e.str(string(o.Class))
	if o.StatusCode != 0 {
		e.raw(`,"status_code":`)
		e.int(int64(o.StatusCode))
	}
	e.raw(`,"timings":`)
	e.timings(&o.Timings)
	if o.FinalURL != "" {
		e.raw(`,"final_url":`)
		e.str(o.FinalURL)
	}
	if len(o.RedirectChain) != 0 {
		e.raw(`,"redirect_chain":`)
		e.strs(o.RedirectChain)
	}
	if o.TLS != nil {
		e.raw(`,"tls":`)
		e.tlsInfo(o.TLS)
	}
	if o.Error != "" {
		e.raw(`,"error":`)
		e.str(o.Error)
	}
	e.raw(`}`)
}

func (e *encoder) timings(t *Timings) {
	e.raw(`{"dns_ms":`)
	e.float(t.DNSMs)
	e.raw(`,"connect_ms":`)
	e.float(t.ConnectMs)
	e.raw(`,"tls_ms":`)
	e.float(t.TLSMs)
	e.raw(`,"ttfb_ms":`)
	e.float(t.TTFBMs)
	e.raw(`,"total_ms":`)
	e.float(t.TotalMs)
	e.raw(`}`)
}

func (e *encoder) tlsInfo(t *TLSInfo) {
	e.raw(`{"version":`)
	e.str(t.Version)
	e.raw(`,"issuer":`)
	e.str(t.Issuer)
	e.raw(`,"subject":`)
	e.str(t.Subject)
	e.raw(`,"not_before":`)
	e.time(t.NotBefore)
	e.raw(`,"not_after":`)
	e.time(t.NotAfter)
	e.raw(`,"chain_valid":`)
	e.bool(t.ChainValid)
	if t.VerifyError != "" {
		e.raw(`,"verify_error":`)
		e.str(t.VerifyError)
	}
	e.raw(`}`)
}

func (e *encoder) checkBatch(b *CheckBatch) {
	e.raw(`{"id":`)
	e.str(b.ID)
	e.raw(`,"region":`)
	e.str(b.Region)
	e.raw(`,"commands":`)
	if b.Commands == nil {
		e.raw("null")
	} else {
		e.buf = append(e.buf, '[')
		for i := range b.Commands {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			e.checkCommand(&b.Commands[i])
		}
		e.buf = append(e.buf, ']')
	}
	e.raw(`}`)
}

func (e *encoder) checkCommand(c *CheckCommand) {
	e.raw(`{"id":`)
	e.str(c.ID)
	e.raw(`,"site_id":`)
	e.str(c.SiteID)
	e.raw(`,"bucket":`)
	e.int(int64(c.Bucket))
	e.raw(`,"region":`)
	e.str(c.Region)
	e.raw(`,"purpose":`)
	e.str(string(c.Purpose))
	e.raw(`,"due_at":`)
	e.time(c.DueAt)
	e.raw(`,"deadline":`)
	e.time(c.Deadline)
	if c.IncidentID != "" {
		e.raw(`,"incident_id":`)
		e.str(c.IncidentID)
	}
	e.raw(`,"config_seq":`)
	e.uint(c.ConfigSeq)
	e.raw(`,"check":`)
	e.checkSpec(&c.Check)
	e.raw(`}`)
}

func (e *encoder) checkSpec(s *CheckSpec) {
	e.raw(`{"url":`)
	e.str(s.URL)
	e.raw(`,"method":`)
	e.str(s.Method)
	e.raw(`,"timeout":`)
	e.duration(s.Timeout)
	if len(s.Headers) != 0 {
		e.raw(`,"headers":`)
		e.strMap(s.Headers)
	}
	if len(s.ExpectStatus) != 0 {
		e.raw(`,"expect_status":`)
		e.ints(s.ExpectStatus)
	}
	if len(s.Keywords) != 0 {
		e.raw(`,"keywords":`)
		e.strs(s.Keywords)
	}
	if len(s.ForbiddenKeywords) != 0 {
		e.raw(`,"forbidden_keywords":`)
		e.strs(s.ForbiddenKeywords)
	}
	e.raw(`,"redirects":`)
	e.str(string(s.Redirects))
	e.raw(`,"tls_verify":`)
	e.bool(s.TLSVerify)
	if len(s.LastRedirectChain) != 0 {
		e.raw(`,"last_redirect_chain":`)
		e.strs(s.LastRedirectChain)
	}
	e.raw(`}`)
}

// raw appends JSON that needs no escaping: punctuation and field names.
func (e *encoder) raw(s string) { e.buf = append(e.buf, s...) }

func (e *encoder) str(s string) { e.buf = appendString(e.buf, s) }

func (e *encoder) int(n int64) { e.buf = strconv.AppendInt(e.buf, n, 10) }

func (e *encoder) uint(n uint64) { e.buf = strconv.AppendUint(e.buf, n, 10) }

func (e *encoder) bool(b bool) { e.buf = strconv.AppendBool(e.buf, b) }

// float appends f as encoding/json's floatEncoder does for a float64: like
// ES6's number to string conversion, the shortest 'f' form, or 'e' below 1e-6
// and from 1e21 on, with the exponent's leading zero dropped (e-07, not
// e-7). NaN and infinities, which JSON cannot hold, are refused.
func (e *encoder) float(f float64) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		e.refused = true
		return
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	n0 := len(e.buf)
	e.buf = strconv.AppendFloat(e.buf, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		b := e.buf[n0:]
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			e.buf = e.buf[:len(e.buf)-1]
		}
	}
}

// time appends t as time.Time's MarshalJSON writes it: quoted RFC 3339 with
// nanoseconds. MarshalJSON refuses a time whose year does not have exactly
// four digits or whose zone offset is 24 hours or more; so does time, with the
// same check on the same bytes (time.Time.appendStrictRFC3339).
func (e *encoder) time(t time.Time) {
	e.buf = append(e.buf, '"')
	n0 := len(e.buf)
	e.buf = t.AppendFormat(e.buf, time.RFC3339Nano)
	if !strictRFC3339(e.buf[n0:]) {
		e.refused = true
	}
	e.buf = append(e.buf, '"')
}

// strictRFC3339 reports whether b, a time formatted as RFC 3339, passes
// time.Time.MarshalJSON's check: a four-digit year and a zone offset of at
// most 23 hours.
func strictRFC3339(b []byte) bool {
	num2 := func(b []byte) byte { return 10*(b[0]-'0') + (b[1] - '0') }
	switch {
	case len(b) < len("2006-01-02T15:04:05Z") || b[len("2006")] != '-':
		return false
	case b[len(b)-1] != 'Z':
		c := b[len(b)-len("Z07:00")]
		if ('0' <= c && c <= '9') || num2(b[len(b)-len("07:00"):]) >= 24 {
			return false
		}
	}
	return true
}

// duration appends d as encoding/json writes a TextMarshaler: its
// MarshalText, as a JSON string.
func (e *encoder) duration(d Duration) {
	text, err := d.MarshalText()
	if err != nil {
		e.refused = true
		return
	}
	e.buf = appendString(e.buf, text)
}

// strs appends a list of strings, or null for a nil one.
func (e *encoder) strs(list []string) {
	if list == nil {
		e.raw("null")
		return
	}
	e.buf = append(e.buf, '[')
	for i, s := range list {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.str(s)
	}
	e.buf = append(e.buf, ']')
}

// ints appends a list of integers, or null for a nil one.
func (e *encoder) ints(list []int) {
	if list == nil {
		e.raw("null")
		return
	}
	e.buf = append(e.buf, '[')
	for i, n := range list {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.int(int64(n))
	}
	e.buf = append(e.buf, ']')
}

// strMap appends a map of strings with its keys in byte order (as
// encoding/json sorts them, with strings.Compare), or null for a nil map.
func (e *encoder) strMap(m map[string]string) {
	if m == nil {
		e.raw("null")
		return
	}
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.buf = append(e.buf, '{')
	for i, k := range keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.str(k)
		e.buf = append(e.buf, ':')
		e.str(m[k])
	}
	e.buf = append(e.buf, '}')
}

// hexDigits are the digits of encoding/json's \u escapes: lower case.
const hexDigits = "0123456789abcdef"

// appendString appends src as a JSON string exactly as encoding/json's
// appendString does with HTML escaping on (json.Marshal's setting): '"' and
// '\\' escaped with a backslash, \b \f \n \r \t by name, other control
// characters and '<', '>', '&' as \u00XX, each byte of invalid UTF-8 as
// \ufffd, and U+2028 and U+2029 as \u2028 and \u2029. Everything else,
// including DEL, is copied as it is.
func appendString[Bytes []byte | string](dst []byte, src Bytes) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(src); {
		if b := src[i]; b < utf8.RuneSelf {
			if htmlSafe(b) {
				i++
				continue
			}
			dst = append(dst, src[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		n := min(len(src)-i, utf8.UTFMax)
		c, size := utf8.DecodeRuneInString(string(src[i : i+n]))
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, src[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, src[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, src[start:]...)
	return append(dst, '"')
}

// htmlSafe reports whether the ASCII byte b goes into a JSON string as it is
// under HTML escaping (encoding/json's htmlSafeSet): printable, and not '"',
// '\\', '<', '>' or '&'.
func htmlSafe(b byte) bool {
	return b >= ' ' && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
}
