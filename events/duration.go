package events

import (
	"fmt"
	"strings"
	"time"
)

// Duration is a time.Duration that reads and writes as Go duration text
// ("30s", "5m", "1h30m") in JSON and YAML, the form people write in site files.
// It encodes in the shortest form ("5m", not "5m0s").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String returns the shortest Go duration text for d.
func (d Duration) String() string {
	s := time.Duration(d).String()
	// time.Duration.String writes "1h0m0s"; drop zero units from the end.
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalText implements encoding.TextMarshaler (used by encoding/json and YAML).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a number with a unit, such as 30s, 5m or 1h", string(b))
	}
	*d = Duration(v)
	return nil
}
