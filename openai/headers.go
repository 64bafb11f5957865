package fanoutopenai

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// budgetHeader is what the x-ratelimit-* headers say of one of the
// server's budgets, "requests" or "tokens": its size per window, what is
// left of it, and how long until it is whole again.
type budgetHeader struct {
	limit, remaining int           // -1: not sent
	reset            time.Duration // -1: not sent
}

// readBudget reads x-ratelimit-limit-NAME, x-ratelimit-remaining-NAME and
// x-ratelimit-reset-NAME. The reset is a Go duration ("1s", "6m0s",
// "20ms"); a bare number counts as seconds.
func readBudget(h http.Header, name string) budgetHeader {
	return budgetHeader{
		limit:     headerInt(h, "X-Ratelimit-Limit-"+name),
		remaining: headerInt(h, "X-Ratelimit-Remaining-"+name),
		reset:     headerDuration(h, "X-Ratelimit-Reset-"+name),
	}
}

// complete reports whether all three headers were sent.
func (b budgetHeader) complete() bool { return b.limit >= 0 && b.remaining >= 0 && b.reset >= 0 }

// spent reports whether the server said nothing is left.
func (b budgetHeader) spent() bool { return b.remaining == 0 }

// resetDelay is how long a 429 should wait by the reset headers: the reset
// of the budget that is spent, or of the tokens when the requests are not
// (a request too large for what is left of the tokens), or the longer of
// the two when both are spent.
func resetDelay(h http.Header) time.Duration {
	req, tok := readBudget(h, "Requests"), readBudget(h, "Tokens")
	var d time.Duration
	if req.spent() {
		d = req.reset
	}
	if tok.reset > 0 && (tok.spent() || !req.spent()) {
		d = max(d, tok.reset)
	}
	if d <= 0 {
		d = req.reset
	}
	return max(d, 0)
}

func headerInt(h http.Header, name string) int {
	n, err := strconv.Atoi(strings.TrimSpace(h.Get(name)))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func headerDuration(h http.Header, name string) time.Duration {
	v := strings.TrimSpace(h.Get(name))
	if v == "" {
		return -1
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return d
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 && s < 1e9 {
		return time.Duration(s * float64(time.Second))
	}
	return -1
}
