package fanoutanthropic

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Budget is one rate limit as the API reports it in the headers of a
// response: anthropic-ratelimit-NAME-limit, -remaining and -reset, where
// NAME is "requests", "tokens", "input-tokens" or "output-tokens".
type Budget struct {
	Name      string
	Limit     int       // the most the budget holds; zero if not reported
	Remaining int       // what is left
	Reset     time.Time // when the budget is full again
}

const ratelimitPrefix = "anthropic-ratelimit-"

// readBudgets returns the budgets the headers report, sorted by name. A
// budget needs both its remaining count and its reset time to be of use,
// so one without either is left out.
func readBudgets(h http.Header) []Budget {
	byName := map[string]*Budget{}
	seen := map[string]int{} // name → fields read: 1 remaining, 2 reset
	for key, values := range h {
		name, field, ok := budgetHeader(key)
		if !ok || len(values) == 0 {
			continue
		}
		b := byName[name]
		if b == nil {
			b = &Budget{Name: name}
			byName[name] = b
		}
		v := strings.TrimSpace(values[0])
		switch field {
		case "limit":
			b.Limit, _ = strconv.Atoi(v)
		case "remaining":
			if n, err := strconv.Atoi(v); err == nil {
				b.Remaining = max(n, 0)
				seen[name] |= 1
			}
		case "reset":
			if t, err := time.Parse(time.RFC3339, v); err == nil {
				b.Reset = t
				seen[name] |= 2
			}
		}
	}
	var out []Budget
	for name, b := range byName {
		if seen[name] == 3 {
			out = append(out, *b)
		}
	}
	slices.SortFunc(out, func(a, b Budget) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// budgetHeader splits anthropic-ratelimit-NAME-FIELD.
func budgetHeader(key string) (name, field string, ok bool) {
	key = strings.ToLower(key)
	rest, ok := strings.CutPrefix(key, ratelimitPrefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// resetDelay is the wait a 429 implies when it gives no Retry-After: until
// the budgets that have nothing left are full again (the latest of their
// resets), or, if none says it is empty, until the soonest reset. Zero if
// the headers report no budget, or only resets already past.
func resetDelay(budgets []Budget, now time.Time) time.Duration {
	var empty, soonest time.Time
	for _, b := range budgets {
		if !b.Reset.After(now) {
			continue
		}
		if b.Remaining == 0 && b.Reset.After(empty) {
			empty = b.Reset
		}
		if soonest.IsZero() || b.Reset.Before(soonest) {
			soonest = b.Reset
		}
	}
	switch {
	case !empty.IsZero():
		return empty.Sub(now)
	case !soonest.IsZero():
		return soonest.Sub(now)
	}
	return 0
}
