// Command limit measures how well a fan-out finds the capacity of a
// service it cannot see (issue 13): fixed limits too low, right and too
// high, failsafe-go's adaptive limiter as a fanout.Guard, and fanout's
// AdaptiveLimiter, side by side against a local HTTP service with a
// concurrency ceiling and a rate ceiling (bench.DefaultCapacity); then the
// same while the capacity halves and doubles back; then a retry budget and
// a circuit breaker against a 10 s outage.
//
// Usage:
//
//	go run ./cmd/limit [-calls 5000] [-phase 10s] [-outage 10s] [-burst 36] [-only regexp] [-skip steady,change,outage]
//
// At the defaults it takes about five minutes on 2 cores.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gofanout/fanout/bench"
)

func main() {
	calls := flag.Int("calls", 5000, "calls of the steady run, per contender")
	phase := flag.Duration("phase", 10*time.Second, "length of each phase of the change run")
	outage := flag.Duration("outage", 10*time.Second, "length of the outage")
	only := flag.String("only", "", "run only the contenders whose name matches this regexp")
	skip := flag.String("skip", "", "comma-separated parts to skip: steady, change, outage")
	burst := flag.Int("burst", 0, "the service's token bucket, in place of bench.DefaultCapacity's")
	flag.Parse()
	log.SetFlags(0)

	ctx := context.Background()
	c := bench.DefaultCapacity()
	if *burst > 0 {
		c.Burst = *burst
	}
	match := regexp.MustCompile(*only)
	var cons []bench.LimitContender
	for _, con := range bench.LimitContenders(c) {
		if match.MatchString(con.Name) {
			cons = append(cons, con)
		}
	}
	skipped := func(part string) bool { return strings.Contains(","+*skip+",", ","+part+",") }
	fmt.Printf("service: %d at once, %.0f a second (burst %d), %v alone, twice that at the ceiling: hidden capacity %.0f calls/s, right fixed limit %d\n\n",
		c.Concurrency, c.Rate, c.Burst, c.Latency, c.Throughput(), c.RightLimit())

	if !skipped("steady") {
		var rs []bench.LimitSteady
		for _, con := range cons {
			r, err := bench.RunLimitSteady(ctx, c, *calls, con)
			if err != nil {
				log.Fatal(err)
			}
			rs = append(rs, r)
		}
		printSteady(os.Stdout, *calls, rs)
	}
	if !skipped("change") {
		var rs []bench.LimitChange
		for _, con := range cons {
			r, err := bench.RunLimitChange(ctx, c, *phase, con)
			if err != nil {
				log.Fatal(err)
			}
			rs = append(rs, r)
		}
		printChange(os.Stdout, c, *phase, rs)
	}
	if !skipped("outage") {
		o := bench.DefaultOutage()
		o.Down = *outage
		var rs []bench.OutageCounts
		for _, v := range bench.OutageVariants() {
			r, err := o.Run(ctx, v)
			if err != nil {
				log.Fatal(err)
			}
			rs = append(rs, r)
		}
		printOutage(os.Stdout, o, rs)
	}
}

func printSteady(w io.Writer, calls int, rs []bench.LimitSteady) {
	fmt.Fprintf(w, "steady: %d calls, every one retried on 429/503 (Retry-After honoured, a Throttle shared)\n\n", calls)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "contender\tthroughput\tof capacity\t429/503 answers\tp50\tp99\twall\tkeys failed\tlimit at end\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%.0f/s\t%.1f%%\t%.2f%% (%d)\t%s\t%s\t%.1f s\t%d\t%s\t\n", r.Name,
			float64(r.Succeeded)/r.Wall.Seconds(), 100*r.Share(), 100*r.OverloadShare(), r.Overload,
			msec(r.P50), msec(r.P99), r.Wall.Seconds(), r.Calls-r.Succeeded, orDash(r.Limit))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func printChange(w io.Writer, c bench.Capacity, phase time.Duration, rs []bench.LimitChange) {
	fmt.Fprintf(w, "change: %v at %.0f/s, %v at %.0f/s, %v at %.0f/s; settled = every %v window from then on at ≥ %.0f%% of capacity with ≤ %.0f%% 429/503\n\n",
		phase, c.Throughput(), phase, c.Scaled(0.5).Throughput(), phase, c.Throughput(),
		bench.SettleWindow, 100*bench.SettleGoodput, 100*bench.SettleOverload)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "contender\tsettled after halving\tsettled after doubling\tlimit (full, half, full)\tthroughput by phase\t429/503 by phase\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, settled(r.Halved), settled(r.Doubled),
			limits(r.Limits), byPhase(r, c, false), byPhase(r, c, true))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func printOutage(w io.Writer, o bench.Outage, rs []bench.OutageCounts) {
	fmt.Fprintf(w, "outage: calls arrive at %.0f/s for %v healthy, %v failing (503 at once), %v healthy; up to %d attempts each; breaker cool-off %v\n\n",
		o.Rate, o.Before, o.Down, o.After, o.MaxAttempts, bench.BreakerCoolOff)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tcalls\tfirst attempts\tall attempts\tall ÷ first\tattempts cut\tfirst success after\tcalls failed after\t")
	base := rs[0].Attempts
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.3f×\t%.1f%%\t%s\t%d\t\n", r.Name, r.Calls, r.Firsts, r.Attempts,
			float64(r.Attempts)/float64(r.Firsts), 100*(1-float64(r.Attempts)/float64(base)),
			msec(r.Recovery), r.FailedAfter)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n(all during the outage; \"first success after\": the first call started after the service came back that succeeded, from its return)")
	fmt.Fprintln(w)
}

func byPhase(r bench.LimitChange, c bench.Capacity, overload bool) string {
	per := int(r.Phase / bench.BinWidth)
	var parts []string
	for i := range 3 {
		var sum bench.Bin
		for _, b := range r.Bins[min(i*per, len(r.Bins)):min((i+1)*per, len(r.Bins))] {
			sum.OK += b.OK
			sum.TooMany += b.TooMany
			sum.Unavailable += b.Unavailable
		}
		if overload {
			parts = append(parts, fmt.Sprintf("%.1f%%", 100*float64(sum.Overload())/float64(max(1, sum.OK+sum.Overload()))))
			continue
		}
		capacity := c.Throughput()
		if i == 1 {
			capacity = c.Scaled(0.5).Throughput()
		}
		parts = append(parts, fmt.Sprintf("%.0f%%", 100*float64(sum.OK)/r.Phase.Seconds()/capacity))
	}
	return strings.Join(parts, " / ")
}

func settled(d time.Duration) string {
	if d < 0 {
		return "not settled"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func limits(l [3]int) string {
	if l == [3]int{} {
		return "–"
	}
	return fmt.Sprintf("%d / %d / %d", l[0], l[1], l[2])
}

func orDash(n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprint(n)
}

func msec(d time.Duration) string {
	if d < 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
