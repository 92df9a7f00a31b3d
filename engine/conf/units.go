package conf

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseSize parses an NGINX size (ngx_parse_size): a decimal number with
// an optional k/K (KiB) or m/M (MiB) suffix. It reports false for anything
// else, including negative numbers and overflow.
func ParseSize(s string) (int64, bool) {
	return parseScaled(s, false)
}

// ParseOffset parses an NGINX offset (ngx_parse_offset): as ParseSize, and
// g/G (GiB) as well.
func ParseOffset(s string) (int64, bool) {
	return parseScaled(s, true)
}

func parseScaled(s string, giga bool) (int64, bool) {
	if s == "" {
		return 0, false
	}
	scale := int64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		scale, s = 1<<10, s[:len(s)-1]
	case 'm', 'M':
		scale, s = 1<<20, s[:len(s)-1]
	case 'g', 'G':
		if giga {
			scale, s = 1<<30, s[:len(s)-1]
		}
	}
	n, ok := atoi(s)
	if !ok || n > math.MaxInt64/scale {
		return 0, false
	}
	return n * scale, true
}

// atoi is ngx_atoi: decimal digits only, no sign, no overflow.
func atoi(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// atoiInt is atoi for values that must fit an int32-sized counter.
func atoiInt(s string) (int, bool) {
	n, ok := atoi(s)
	if !ok || n > math.MaxInt32 {
		return 0, false
	}
	return int(n), true
}

// ParseDuration parses an NGINX time (ngx_parse_time). With seconds set
// the value is in whole seconds and the units are y M w d h m s; otherwise
// it is in milliseconds and the units are w d h m s ms. Units must come in
// decreasing order, at most once each, and may be separated by spaces
// ("1h 30m"); a trailing number without a unit is seconds ("1m30" = 90s).
func ParseDuration(s string, seconds bool) (time.Duration, bool) {
	const maxVal = math.MaxInt64 / int64(time.Millisecond) // keeps ms→Duration safe
	const (
		stStart = iota
		stYear
		stMonth
		stWeek
		stDay
		stHour
		stMin
		stSec
		stMsec
	)
	step := stStart
	if !seconds {
		step = stMonth
	}
	var value, total int64
	valid := false
	for i := 0; i < len(s); {
		c := s[i]
		if c >= '0' && c <= '9' {
			if value > (maxVal-int64(c-'0'))/10 {
				return 0, false
			}
			value = value*10 + int64(c-'0')
			valid = true
			i++
			continue
		}
		i++
		var scale int64
		switch c {
		case 'y':
			if step > stStart {
				return 0, false
			}
			step, scale = stYear, 60*60*24*365
		case 'M':
			if step >= stMonth {
				return 0, false
			}
			step, scale = stMonth, 60*60*24*30
		case 'w':
			if step >= stWeek {
				return 0, false
			}
			step, scale = stWeek, 60*60*24*7
		case 'd':
			if step >= stDay {
				return 0, false
			}
			step, scale = stDay, 60*60*24
		case 'h':
			if step >= stHour {
				return 0, false
			}
			step, scale = stHour, 60*60
		case 'm':
			if i < len(s) && s[i] == 's' {
				if seconds || step >= stMsec {
					return 0, false
				}
				i++
				step, scale = stMsec, 1
				break
			}
			if step >= stMin {
				return 0, false
			}
			step, scale = stMin, 60
		case 's':
			if step >= stSec {
				return 0, false
			}
			step, scale = stSec, 1
		default:
			return 0, false
		}
		if step != stMsec && !seconds {
			scale *= 1000
		}
		if value > maxVal/scale {
			return 0, false
		}
		value *= scale
		if total > maxVal-value {
			return 0, false
		}
		total += value
		value = 0
		for i < len(s) && s[i] == ' ' {
			i++
		}
	}
	if !valid {
		return 0, false
	}
	if !seconds {
		if value > maxVal/1000 {
			return 0, false
		}
		value *= 1000
	}
	if total > maxVal-value {
		return 0, false
	}
	total += value
	if seconds {
		if total > math.MaxInt64/int64(time.Second) {
			return 0, false
		}
		return time.Duration(total) * time.Second, true
	}
	return time.Duration(total) * time.Millisecond, true
}

// formatDuration writes d in NGINX units for -T ("10m", "60s", "500ms").
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	ms := d.Milliseconds()
	units := []struct {
		n    int64
		name string
	}{{7 * 86400000, "w"}, {86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}}
	var b strings.Builder
	for _, u := range units {
		if ms >= u.n {
			b.WriteString(itoa64(ms / u.n))
			b.WriteString(u.name)
			ms %= u.n
		}
	}
	return b.String()
}

// formatSize writes n with the largest exact k/m suffix.
func formatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<20) == 0:
		return itoa64(n>>20) + "m"
	case n != 0 && n%(1<<10) == 0:
		return itoa64(n>>10) + "k"
	}
	return itoa64(n)
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
