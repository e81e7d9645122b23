package config

import (
	"fmt"
	"github.com/vigil-dev/vigil/events"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// value is a typed configuration value that parses its text form.
type value interface {
	Set(string) error
	Get() any
}

type stringValue struct {
	p     *string
	check func(string) error
}

func (v *stringValue) Set(s string) error {
	if v.check != nil {
		if err := v.check(s); err != nil {
			return err
		}
	}
	*v.p = s
	return nil
}
func (v *stringValue) Get() any { return *v.p }

type intValue struct {
	p        *int
	min, max int
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	if n < v.min || n > v.max {
		return fmt.Errorf("%d is out of range [%d, %d]", n, v.min, v.max)
	}
	*v.p = n
	return nil
}
func (v *intValue) Get() any { return *v.p }

type floatValue struct {
	p        *float64
	min, max float64
}

func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return fmt.Errorf("%q is not a number", s)
	}
	if f < v.min || f > v.max {
		return fmt.Errorf("%v is out of range [%v, %v]", f, v.min, v.max)
	}
	*v.p = f
	return nil
}
func (v *floatValue) Get() any { return *v.p }

type boolValue struct{ p *bool }

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*v.p = b
	return nil
}
func (v *boolValue) Get() any { return *v.p }

// IsBoolFlag lets the flag package accept --deny-delete without a value. The
// recorder forwards it.
func (v *boolValue) IsBoolFlag() bool { return true }

type durationValue struct {
	p        *time.Duration
	min, max time.Duration
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration: use a number with a unit, such as 500ms, 10s or 5m", s)
	}
	if d < v.min {
		return fmt.Errorf("%s is below the minimum %s", d, v.min)
	}
	if v.max > 0 && d > v.max {
		return fmt.Errorf("%s is above the maximum %s", d, v.max)
	}
	*v.p = d
	return nil
}
func (v *durationValue) Get() any { return v.p.String() }

type enumValue struct {
	p       *string
	allowed []string
}

func (v *enumValue) Set(s string) error {
	for _, a := range v.allowed {
		if s == a {
			*v.p = s
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", s, strings.Join(v.allowed, ", "))
}
func (v *enumValue) Get() any { return *v.p }

type listValue struct {
	p     *[]string
	check func(string) error
}

func (v *listValue) Set(s string) error {
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if v.check != nil {
			if err := v.check(item); err != nil {
				return err
			}
		}
		out = append(out, item)
	}
	if len(out) == 0 {
		return fmt.Errorf("the list is empty")
	}
	*v.p = out
	return nil
}
func (v *listValue) Get() any { return *v.p }

// sizeValue is a byte count written as a number with an optional unit: 512,
// 64KiB, 1MiB, 2GiB (or KB, MB, GB as powers of 1000).
type sizeValue struct {
	p   *int64
	min int64
}

func (v *sizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	if n < v.min {
		return fmt.Errorf("%s is below the minimum %s", s, FormatSize(v.min))
	}
	*v.p = n
	return nil
}
func (v *sizeValue) Get() any { return FormatSize(*v.p) }

// ParseSize parses a byte count such as 1MiB or 500MB.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: use a number with an optional unit, such as 512KiB, 1MiB or 2GiB", s)
	}
	return n * mult, nil
}

// FormatSize writes n with the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func nonEmpty(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("must not be empty")
	}
	return nil
}

func checkNATSURL(s string) error {
	for _, one := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || u.Host == "" {
			return fmt.Errorf("%q is not a URL such as nats://127.0.0.1:4222", one)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%q has scheme %q: use nats://, tls://, ws:// or wss://", one, u.Scheme)
		}
	}
	return nil
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (such as :8080 or 127.0.0.1:8080)", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port", s)
	}
	return nil
}

// checkDSN accepts an empty DSN (no store configured) or one of the forms
// the projections store opens.
func checkDSN(s string) error {
	switch {
	case s == "", strings.HasPrefix(s, "sqlite:") && len(s) > len("sqlite:"), strings.HasPrefix(s, "mysql://"), strings.Contains(s, "@tcp("):
		return nil
	}
	return fmt.Errorf("%q is not a store DSN: use mysql://user:pw@tcp(host:3306)/vigil or sqlite:PATH", s)
}

// checkRegion accepts region names (events.ValidateRegion).
func checkRegion(s string) error { return events.ValidateRegion(s) }
