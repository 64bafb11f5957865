package fanoutdebug

import (
	"strings"
	"unicode/utf8"
)

// ring keeps the last max values added.
type ring[T any] struct {
	max  int
	vals []T
	next int
}

func (r *ring[T]) add(v T) {
	if r.max <= 0 {
		return
	}
	if len(r.vals) < r.max {
		r.vals = append(r.vals, v)
		return
	}
	r.vals[r.next] = v
	r.next = (r.next + 1) % r.max
}

// newestFirst returns a copy of the values, the last added first.
func (r *ring[T]) newestFirst() []T {
	n := len(r.vals)
	out := make([]T, n)
	for i := range out {
		out[i] = r.vals[(r.next-1-i+2*n)%n]
	}
	return out
}

// maxText caps the keys and error messages the page keeps, in bytes.
const maxText = 500

// clip returns a copy of s cut to maxText bytes: a copy, since s is often
// a slice of something much larger (a line of a file, the start of a
// response body) that the page must not keep.
func clip(s string) string {
	if len(s) <= maxText {
		return strings.Clone(s)
	}
	cut := maxText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return clip(err.Error())
}
