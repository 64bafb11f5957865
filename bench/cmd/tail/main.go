// Command tail measures what hedging does to the tail latency of a
// fan-out: many 100-way fan-outs of a simulated service whose latency is
// 10 ms at the median with a 1% tail of 1 s, run with real timers, without
// hedging, with a fixed-delay hedge, with the p95 hedge, and with a hedge
// plus a per-attempt timeout and one retry. It prints the fan-outs'
// latency quantiles and the extra attempts each policy costs, and writes
// the latency CDFs as CSV for cmd/chart.
//
// Fan-outs arrive open-loop at a fixed rate, as requests reach a server,
// rather than back to back: the rate keeps the CPU well below saturation
// on a small machine, so that the timers, not the scheduler, set the
// latencies. At the defaults each policy takes fanouts/rate = 25 s.
//
// Usage:
//
//	go run ./cmd/tail [-fanouts 5000] [-rate 200] [-width 100] [-scale 1] [-csv tail.csv]
package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/gofanout/fanout"
)

// service is the simulated backend: a lognormal body with its median at
// Median, and with probability TailP an attempt that takes Tail instead
// (a GC pause, a queue behind a slow request, a sick replica). Each
// attempt draws independently, so a hedged copy is a fresh draw: the
// assumption behind backup requests, that the copy lands elsewhere.
type service struct {
	Median time.Duration
	Sigma  float64 // spread of the body, in log space
	TailP  float64
	Tail   time.Duration
	calls  atomic.Int64
}

func (s *service) latency() time.Duration {
	if rand.Float64() < s.TailP {
		return s.Tail
	}
	return time.Duration(float64(s.Median) * math.Exp(s.Sigma*rand.NormFloat64()))
}

// call waits out one attempt's latency, or until ctx ends.
func (s *service) call(ctx context.Context) (int, error) {
	s.calls.Add(1)
	t := time.NewTimer(s.latency())
	defer t.Stop()
	select {
	case <-t.C:
		return 1, nil
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
}

// policy is one way to run the fan-outs.
type policy struct {
	Name   string
	Hedged bool
	Opts   []fanout.Option
}

func policies(scale float64) []policy {
	ms := func(n float64) time.Duration { return time.Duration(n * scale * float64(time.Millisecond)) }
	return []policy{
		{Name: "none"},
		{Name: "hedge delay=20ms", Hedged: true, Opts: []fanout.Option{
			fanout.WithHedge(fanout.HedgePolicy{Delay: ms(20)}),
		}},
		{Name: "hedge p95", Hedged: true, Opts: []fanout.Option{
			fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.95}),
		}},
		{Name: "hedge delay=20ms + attempt timeout 30ms + 1 retry", Hedged: true, Opts: []fanout.Option{
			fanout.WithHedge(fanout.HedgePolicy{Delay: ms(20)}),
			fanout.WithTaskTimeout(ms(30)),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: ms(1), Jitter: -1}),
		}},
		{Name: "hedge p95 + attempt timeout 30ms + 1 retry", Hedged: true, Opts: []fanout.Option{
			fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.95}),
			fanout.WithTaskTimeout(ms(30)),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: ms(1), Jitter: -1}),
		}},
	}
}

// outcome is what one policy measured.
type outcome struct {
	mu         sync.Mutex
	hedgeAfter time.Duration // median time an attempt ran before it was hedged
	policy     string
	latencies  []time.Duration // one per fan-out, sorted
	tasks      int
	attempts   int
	hedges     int
	failed     int
	wall       time.Duration
}

func main() {
	fanouts := flag.Int("fanouts", 5000, "fan-outs per policy")
	width := flag.Int("width", 100, "tasks per fan-out")
	rate := flag.Float64("rate", 200, "fan-outs started per second")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the hedged policies here")
	scale := flag.Float64("scale", 1, "multiply every latency by this (0.1 runs 10× faster)")
	csvPath := flag.String("csv", "tail.csv", "where to write the latency CDFs")
	flag.Parse()

	ms := func(n float64) time.Duration { return time.Duration(n * *scale * float64(time.Millisecond)) }
	svc := &service{Median: ms(10), Sigma: 0.25, TailP: 0.01, Tail: ms(1000)}
	fmt.Printf("service: lognormal median %v sigma %.2f, %.0f%% of attempts take %v; %d fan-outs of %d keys per policy, %.0f started per second\n\n",
		svc.Median, svc.Sigma, svc.TailP*100, svc.Tail, *fanouts, *width, *rate)
	if *cpuprofile != "" {
		stop, err := profile(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		defer stop()
	}

	keys := make([]string, *width)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	var outs []*outcome
	for _, p := range policies(*scale) {
		out := measure(p, svc, keys, *fanouts, *rate)
		outs = append(outs, out)
		log.Printf("%s: done in %v", p.Name, out.wall.Round(time.Millisecond))
	}
	printTable(os.Stdout, outs)
	if err := writeCSV(*csvPath, outs); err != nil {
		log.Fatal(err)
	}
}

// measure runs the fan-outs of one policy, starting rate a second.
func measure(p policy, svc *service, keys []string, fanouts int, rate float64) *outcome {
	out := &outcome{policy: p.Name, latencies: make([]time.Duration, fanouts)}
	var hedgeAfter []time.Duration
	opts := p.Opts
	if p.Hedged {
		opts = append(slices.Clone(opts), fanout.WithObserver(&fanout.Observer{
			Hedge: func(_ context.Context, h fanout.HedgeInfo) {
				out.mu.Lock()
				hedgeAfter = append(hedgeAfter, h.After)
				out.mu.Unlock()
			},
		}))
	}
	tasks := make([]fanout.Task[int], len(keys))
	for i, k := range keys {
		tasks[i] = fanout.Task[int]{Key: k, Do: svc.call}
	}
	interval := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range fanouts {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Go(func() {
			t0 := time.Now()
			rs, _ := fanout.Run(context.Background(), tasks, opts...)
			out.latencies[i] = time.Since(t0)
			out.add(rs)
		})
	}
	wg.Wait()
	out.wall = time.Since(start)
	slices.Sort(out.latencies)
	if len(hedgeAfter) > 0 {
		out.hedgeAfter = quantile(slices.Sorted(slices.Values(hedgeAfter)), 0.5)
	}
	return out
}

// add counts one fan-out's attempts, hedges and failures.
func (o *outcome) add(rs *fanout.Results[int]) {
	attempts, hedges, failed := 0, 0, 0
	for _, r := range rs.All() {
		attempts += r.Attempts
		hedges += r.Hedges
		if r.Err != nil {
			failed++
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tasks += rs.Len()
	o.attempts += attempts
	o.hedges += hedges
	o.failed += failed
}

// quantile returns the q-quantile of sorted, by the nearest-rank method.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func printTable(w *os.File, outs []*outcome) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tp50\tp90\tp99\tp99.9\tmax\tp99.9 cut\textra attempts\thedges\thedged after (median)\tfailed keys\t")
	base := quantile(outs[0].latencies, 0.999)
	for _, o := range outs {
		p999 := quantile(o.latencies, 0.999)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f×\t%.2f%%\t%.2f%%\t%s\t%d\t\n", o.policy,
			msec(quantile(o.latencies, 0.5)), msec(quantile(o.latencies, 0.9)),
			msec(quantile(o.latencies, 0.99)), msec(p999), msec(o.latencies[len(o.latencies)-1]),
			float64(base)/float64(p999),
			100*float64(o.attempts-o.tasks)/float64(o.tasks), 100*float64(o.hedges)/float64(o.tasks),
			msec(o.hedgeAfter), o.failed)
	}
	tw.Flush()
}

func msec(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

// cdfPoints are the quantiles written to the CSV: coarse in the body,
// fine in the tail, where hedging acts.
func cdfPoints() []float64 {
	var qs []float64
	for q := 0.01; q < 0.9; q += 0.01 {
		qs = append(qs, q)
	}
	for q := 0.9; q < 0.99; q += 0.001 {
		qs = append(qs, q)
	}
	for q := 0.99; q < 0.9999; q += 0.0001 {
		qs = append(qs, q)
	}
	return append(qs, 1)
}

// writeCSV writes policy,quantile,latency_ms rows.
func writeCSV(path string, outs []*outcome) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"policy", "quantile", "latency_ms"})
	for _, o := range outs {
		for _, q := range cdfPoints() {
			_ = w.Write([]string{o.policy, strconv.FormatFloat(q, 'f', 4, 64),
				strconv.FormatFloat(float64(quantile(o.latencies, q))/float64(time.Millisecond), 'f', 2, 64)})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profile starts a CPU profile written to path, and returns its stop.
func profile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
