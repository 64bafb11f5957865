package bench_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gofanout/fanout/bench"
)

// BenchmarkHerd runs bench.DefaultHerd's 200 calls against a budget of 20
// requests a second, retrying on 429 in three ways: waiting exactly the
// Retry-After the server sent in whole seconds, waiting exactly its
// retry-after-ms, and ignoring the server for plain exponential backoff.
// A run takes about 10 s; ns/op is its wall time. Compare two cores with
// benchstat on the counts: fewer repeat-429s/op for as many
// succeeded/op means the retries no longer herd.
func BenchmarkHerd(b *testing.B) {
	for _, v := range []struct {
		name string
		herd func(*bench.Herd)
	}{
		{"retry=exact/header=s", func(*bench.Herd) {}},
		{"retry=exact/header=ms", func(h *bench.Herd) { h.RetryAfterMs = true }},
		{"retry=backoff/header=s", func(h *bench.Herd) { h.IgnoreDelay = true }},
	} {
		b.Run(v.name, func(b *testing.B) {
			h := bench.DefaultHerd()
			v.herd(&h)
			var sum bench.HerdCounts
			for b.Loop() {
				c, err := h.Run(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				sum.Succeeded += c.Succeeded
				sum.Hits += c.Hits
				sum.TooMany += c.TooMany
				sum.Repeat429 += c.Repeat429
			}
			n := float64(b.N)
			b.ReportMetric(float64(sum.Succeeded)/n, "succeeded/op")
			b.ReportMetric(float64(sum.Hits)/n, "hits/op")
			b.ReportMetric(float64(sum.TooMany)/n, "429s/op")
			b.ReportMetric(float64(sum.Repeat429)/n, "repeat-429s/op")
		})
	}
}

func TestFixedWindow(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	tests := []struct {
		give     time.Duration
		wantOK   bool
		wantLeft time.Duration
	}{
		{give: 0, wantOK: true},
		{give: 100 * time.Millisecond, wantOK: true},
		{give: 250 * time.Millisecond, wantLeft: 750 * time.Millisecond},
		{give: 999 * time.Millisecond, wantLeft: time.Millisecond},
		{give: time.Second, wantOK: true},
		{give: 1500 * time.Millisecond, wantOK: true},
		{give: 1600 * time.Millisecond, wantLeft: 400 * time.Millisecond},
		{give: 1550 * time.Millisecond, wantLeft: 450 * time.Millisecond}, // out of order, same window
		{give: 3200 * time.Millisecond, wantOK: true},                     // a window with no request skipped
	}
	w := bench.FixedWindow{Budget: 2, Window: time.Second, Start: start}
	for _, tt := range tests {
		left, ok := w.Admit(at(tt.give))
		if ok != tt.wantOK || left != tt.wantLeft {
			t.Errorf("Admit(start+%v) = %v, %t; want %v, %t", tt.give, left, ok, tt.wantLeft, tt.wantOK)
		}
	}
}

// A minute's window cannot roll over during these tests, so the answers
// are exact without a fake clock.

func TestHerdServerAnswersWithTheTimeLeftInItsWindow(t *testing.T) {
	tests := []struct {
		name   string
		ms     bool
		header string
		min    int64
		max    int64
	}{
		{name: "Retry-After in whole seconds, rounded up", header: "Retry-After", min: 60, max: 60},
		{name: "retry-after-ms", ms: true, header: "Retry-After-Ms", min: 59_000, max: 60_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := bench.NewHerdServer(2, time.Minute, 0, tt.ms)
			var codes []int
			for range 3 {
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/k", nil))
				codes = append(codes, rec.Code)
				if rec.Code != http.StatusTooManyRequests {
					continue
				}
				got, err := strconv.ParseInt(rec.Header().Get(tt.header), 10, 64)
				if err != nil || got < tt.min || got > tt.max {
					t.Errorf("%s = %q, want %d to %d", tt.header, rec.Header().Get(tt.header), tt.min, tt.max)
				}
			}
			if want := []int{200, 200, 429}; !slices.Equal(codes, want) {
				t.Errorf("status codes %v, want %v", codes, want)
			}
		})
	}
}

func TestHerdCountsRepeat429sPerKey(t *testing.T) {
	tests := []struct {
		name string
		give bench.Herd
		want bench.HerdCounts
	}{
		{
			name: "a budget for everyone: no 429",
			give: bench.Herd{Keys: 10, Limit: 10, MaxAttempts: 2, Budget: 10, Window: time.Minute},
			want: bench.HerdCounts{Succeeded: 10, Hits: 10},
		},
		{
			name: "one attempt each: every 429 is a first",
			give: bench.Herd{Keys: 10, Limit: 10, MaxAttempts: 1, Budget: 4, Window: time.Minute},
			want: bench.HerdCounts{Succeeded: 4, Hits: 10, TooMany: 6},
		},
		{
			name: "plain backoff retries into the spent budget: every second 429 is a repeat",
			give: bench.Herd{Keys: 10, Limit: 10, MaxAttempts: 2, Budget: 4, Window: time.Minute, IgnoreDelay: true},
			want: bench.HerdCounts{Succeeded: 4, Hits: 16, TooMany: 12, Repeat429: 6},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.give.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got.Wall = 0
			if got != tt.want {
				t.Errorf("counts %+v, want %+v", got, tt.want)
			}
		})
	}
}
