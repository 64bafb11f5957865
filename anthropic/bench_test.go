package fanoutanthropic_test

import (
	"net/http"
	"testing"
	"time"

	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// BenchmarkClassify is the cost Classify adds to a failed call: a 429
// with retry-after-ms and rate-limit headers.
func BenchmarkClassify(b *testing.B) {
	h := report("Tokens", 25_000, 0, time.Now().Add(time.Second))
	h.Set("Retry-After-Ms", "1500")
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages", nil)
	sdk := sdkErrorFor(b, req, h)
	b.ReportAllocs()
	for b.Loop() {
		if fanoutanthropic.Classify(sdk) == nil {
			b.Fatal("nil")
		}
	}
}

// BenchmarkEstimate estimates a prompt of about 500 tokens.
func BenchmarkEstimate(b *testing.B) {
	params := ask("k", 480)
	b.ReportAllocs()
	for b.Loop() {
		if fanoutanthropic.Estimate(params) == 0 {
			b.Fatal("zero")
		}
	}
}

// BenchmarkLimits is one call through Limits with room to spare: the wait,
// then the request through its middleware, answered with two budgets.
func BenchmarkLimits(b *testing.B) {
	var l fanoutanthropic.Limits
	h := report("Tokens", 1<<30, 1<<30-1, time.Now().Add(time.Hour))
	for k, v := range report("Requests", 1<<30, 1<<30-1, time.Now().Add(time.Hour)) {
		h[k] = v
	}
	res := &http.Response{StatusCode: http.StatusOK, Header: h}
	next := func(*http.Request) (*http.Response, error) { return res, nil }
	mw := l.Middleware()
	req, _ := http.NewRequestWithContext(b.Context(), http.MethodPost, "http://127.0.0.1/v1/messages", nil)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.WaitN(b.Context(), 500); err != nil {
			b.Fatal(err)
		}
		mw(req, next)
	}
}
