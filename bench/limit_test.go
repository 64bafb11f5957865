package bench_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/bench"
)

// full reports whether FANOUT_BENCH_FULL=1 asks for the full-size runs;
// by default the limit benchmarks run small enough for the smoke run
// (under 20 s each), and cmd/limit gives the figures of BENCHMARKS.md.
func full() bool { return os.Getenv("FANOUT_BENCH_FULL") == "1" }

// BenchmarkLimit makes calls to bench.DefaultCapacity's service under
// each contender: 600 calls (5 000 with FANOUT_BENCH_FULL=1). ns/op is
// the run's wall time; the metrics are the throughput as a share of the
// hidden capacity, the share of 429/503 answers, and the p50 and p99 of
// the successful calls.
func BenchmarkLimit(b *testing.B) {
	calls := 600
	if full() {
		calls = 5000
	}
	c := bench.DefaultCapacity()
	for _, con := range bench.LimitContenders(c) {
		b.Run(con.Name, func(b *testing.B) {
			var r bench.LimitSteady
			for b.Loop() {
				var err error
				if r, err = bench.RunLimitSteady(context.Background(), c, calls, con); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(100*r.Share(), "%capacity")
			b.ReportMetric(100*r.OverloadShare(), "%overload")
			b.ReportMetric(float64(r.P50)/1e6, "p50-ms")
			b.ReportMetric(float64(r.P99)/1e6, "p99-ms")
		})
	}
}

// BenchmarkLimitChange calls the same service for three phases of 1 s
// (10 s with FANOUT_BENCH_FULL=1), at full, half and full capacity, and
// reports the seconds each contender took to settle after the capacity
// halved and after it doubled back; -1 when it did not.
func BenchmarkLimitChange(b *testing.B) {
	phase := time.Second
	if full() {
		phase = 10 * time.Second
	}
	c := bench.DefaultCapacity()
	for _, con := range bench.LimitContenders(c) {
		b.Run(con.Name, func(b *testing.B) {
			var r bench.LimitChange
			for b.Loop() {
				var err error
				if r, err = bench.RunLimitChange(context.Background(), c, phase, con); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(seconds(r.Halved), "s-to-settle-halved")
			b.ReportMetric(seconds(r.Doubled), "s-to-settle-doubled")
		})
	}
}

func seconds(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return d.Seconds()
}

// BenchmarkOutage runs bench.DefaultOutage's calls through each variant:
// retries alone, with a retry budget, with a circuit breaker, with both;
// shortened to a 1 s outage unless FANOUT_BENCH_FULL=1. The metrics are
// the attempts made during the outage per first attempt, and in all.
func BenchmarkOutage(b *testing.B) {
	o := bench.DefaultOutage()
	if !full() {
		o.Before, o.Down, o.After = 500*time.Millisecond, time.Second, 500*time.Millisecond
	}
	for _, v := range bench.OutageVariants() {
		b.Run(v.Name, func(b *testing.B) {
			var r bench.OutageCounts
			for b.Loop() {
				var err error
				if r, err = o.Run(context.Background(), v); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(r.Attempts)/float64(max(1, r.Firsts)), "attempts/first")
			b.ReportMetric(float64(r.Attempts), "attempts")
		})
	}
}

func TestCapacity(t *testing.T) {
	c := bench.DefaultCapacity()
	if got := c.Throughput(); got != 360 {
		t.Errorf("Throughput() = %v, want 360: the rate binds first", got)
	}
	if got := c.RightLimit(); got != 20 {
		t.Errorf("RightLimit() = %d, want 20", got)
	}
	half := c.Scaled(0.5)
	if half.Concurrency != 16 || half.Rate != 180 || half.Throughput() != 180 {
		t.Errorf("Scaled(0.5) = %+v, throughput %v", half, half.Throughput())
	}
}

func TestCapacityServerAnswersOverloadAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		give   bench.Capacity
		want   int
		header string
	}{
		{"503 above the concurrency ceiling", bench.Capacity{Concurrency: 2, Rate: 1000, Burst: 100, Latency: time.Minute}, http.StatusServiceUnavailable, ""},
		{"429 above the rate ceiling, with the wait", bench.Capacity{Concurrency: 100, Rate: 1, Burst: 2, Latency: time.Minute}, http.StatusTooManyRequests, "Retry-After-Ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := bench.NewCapacityServer(tt.give)
			serve := func(ctx context.Context) *httptest.ResponseRecorder {
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx))
				return rec
			}
			held, release := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for range 2 { // take the two slots or tokens, and hold them
				wg.Go(func() { serve(held) })
			}
			defer wg.Wait()
			defer release()
			gone, cancel := context.WithCancel(context.Background())
			cancel() // a probe admitted leaves at once
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				rec := serve(gone)
				if rec.Code != tt.want {
					continue
				}
				if tt.header != "" {
					if ms, err := strconv.Atoi(rec.Header().Get(tt.header)); err != nil || ms <= 0 {
						t.Errorf("%s = %q", tt.header, rec.Header().Get(tt.header))
					}
				}
				return
			}
			t.Fatalf("no %d within 5 s", tt.want)
		})
	}
}

func TestFailsafeGuardHoldsItsLimit(t *testing.T) {
	g := bench.NewFailsafeGuard(1, 2, 2)
	ctx := context.Background()
	d1, err1 := g.Admit(ctx, fanout.Admission{Key: "a", Attempt: 1})
	d2, err2 := g.Admit(ctx, fanout.Admission{Key: "b", Attempt: 1})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := g.Admit(short, fanout.Admission{Key: "c", Attempt: 1}); err == nil {
		t.Error("a third attempt was admitted past the limit of 2")
	}
	d1(fanout.Outcome{Elapsed: time.Millisecond})
	d2(fanout.Outcome{Err: context.Canceled})
	if n := g.L.Inflight(); n != 0 {
		t.Errorf("%d permits still held", n)
	}
}

func TestSettled(t *testing.T) {
	good := bench.Bin{OK: 10}            // 100 a second, as the capacity
	idle := bench.Bin{}                  // none
	bad := bench.Bin{OK: 10, TooMany: 1} // 9% overload
	bins := func(parts ...[]bench.Bin) []bench.Bin {
		var all []bench.Bin
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	n := func(b bench.Bin, k int) []bench.Bin {
		s := make([]bench.Bin, k)
		for i := range s {
			s[i] = b
		}
		return s
	}
	tests := []struct {
		name string
		give []bench.Bin
		want time.Duration
	}{
		{"settled at once", n(good, 30), 0},
		{"once the idle bins are a fifth of the window", bins(n(idle, 5), n(good, 25)), 300 * time.Millisecond},
		{"once a burst of overload is 5% of the window", bins(n(good, 10), n(bad, 10), n(good, 10)), 1500 * time.Millisecond},
		{"idle at the end", bins(n(good, 25), n(idle, 5)), -1},
		{"bins missing", n(good, 20), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bench.Settled(tt.give, 0, 3*time.Second, 100); got != tt.want {
				t.Errorf("Settled = %v, want %v", got, tt.want)
			}
		})
	}
}
