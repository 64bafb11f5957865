package fanout

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// HTTPError is a failed HTTP response, as [CheckResponse] reports it.
// Delay is what the server asked to wait before trying again, zero if it
// did not say.
type HTTPError struct {
	StatusCode int
	Status     string
	Delay      time.Duration
}

// Error gives the status and any requested delay.
func (e *HTTPError) Error() string {
	if e.Delay > 0 {
		return fmt.Sprintf("fanout: HTTP %s (retry after %v)", e.Status, e.Delay)
	}
	return "fanout: HTTP " + e.Status
}

// RetryAfter returns the delay the server asked for; [WithRetry] waits that
// long before the next attempt.
func (e *HTTPError) RetryAfter() time.Duration { return e.Delay }

// CheckResponse returns nil for a response with a status below 400, and an
// [*HTTPError] otherwise, with the delay from its Retry-After header (in
// seconds or as an HTTP date) or retry-after-ms header. A status that
// [Retryable]'s table does not retry (every 4xx but 408, 409, 425 and 429)
// is wrapped in backoff.Permanent, so that a RetryIf of its own sees it as
// permanent too; errors.As still finds the *HTTPError.
func CheckResponse(resp *http.Response) error {
	if resp.StatusCode < 400 {
		return nil
	}
	err := &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, Delay: ParseRetryAfter(resp.Header, time.Now())}
	if err.Status == "" {
		err.Status = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	}
	if retryableStatus(resp.StatusCode) {
		return err
	}
	return backoff.Permanent(err)
}

// ParseRetryAfter returns the delay a response's headers ask for, as of
// now: retry-after-ms (as some LLM APIs send) first, then Retry-After as
// seconds or an HTTP date; zero if they ask for none. A delay too long
// for a Duration is the longest one.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	if ms := strings.TrimSpace(h.Get("Retry-After-Ms")); ms != "" {
		if v, err := strconv.ParseFloat(ms, 64); err == nil && v > 0 {
			return clampDelay(v, time.Millisecond)
		}
	}
	ra := strings.TrimSpace(h.Get("Retry-After"))
	if ra == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(ra, 64); err == nil {
		return clampDelay(secs, time.Second)
	}
	if at, err := http.ParseTime(ra); err == nil {
		return max(at.Sub(now), 0)
	}
	return 0
}

// clampDelay converts n units to a Duration. A delay too long for a
// Duration is the longest one, so that WithRetry's MaxWait gives up on it
// rather than wrapping it to a negative, ignored delay; NaN and values
// below zero mean none.
func clampDelay(n float64, unit time.Duration) time.Duration {
	switch {
	case !(n > 0):
		return 0
	case n >= float64(math.MaxInt64)/float64(unit):
		return math.MaxInt64
	}
	return time.Duration(n * float64(unit))
}
