// Command vote measures what an early-stopping vote saves: five voters
// (say, five samples of an LLM) answer after a random latency, each giving
// the common answer with probability p and a random other one otherwise.
// fanout.Gather with fanout.Vote stops as soon as no other answer can
// catch up with the leader; the alternative waits for every voter with
// fanout.Run and counts. Both run on the same draws, trial by trial, so
// the difference is the early stop alone.
//
// With l = 5 every voter starts at once and the stop saves wall time and
// cancels calls in flight; with l = 1 or 2 the later voters start only as
// slots free up, so the stop also saves whole calls. (With l = 3 it saves
// none: by the third answer, the two slots freed earlier have started the
// fourth and fifth voters.)
//
// Usage:
//
//	go run ./cmd/vote [-trials 1000] [-median 20ms]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/gofanout/fanout"
)

const voters = 5

// draw is one trial's voters: when each answers, and what.
type draw struct {
	latency [voters]time.Duration
	answer  [voters]string
}

func newDraw(rng *rand.Rand, p float64, median time.Duration) draw {
	var d draw
	for i := range voters {
		d.latency[i] = time.Duration(float64(median) * math.Exp(0.5*rng.NormFloat64()))
		d.answer[i] = "A"
		if rng.Float64() >= p {
			d.answer[i] = string(rune('B' + rng.IntN(3)))
		}
	}
	return d
}

// calls counts a trial's calls: started, and answered rather than
// cancelled.
type calls struct{ started, answered atomic.Int64 }

func (d draw) tasks(c *calls) []fanout.Task[string] {
	tasks := make([]fanout.Task[string], voters)
	for i := range tasks {
		tasks[i] = fanout.Task[string]{Key: "voter" + strconv.Itoa(i), Do: func(ctx context.Context) (string, error) {
			c.started.Add(1)
			t := time.NewTimer(d.latency[i])
			defer t.Stop()
			select {
			case <-t.C:
				c.answered.Add(1)
				return d.answer[i], nil
			case <-ctx.Done():
				return "", context.Cause(ctx)
			}
		}}
	}
	return tasks
}

// trial is what one method measured on one draw.
type trial struct {
	wall              time.Duration
	started, answered int64
	winner            string
}

// early votes with Gather and fanout.Vote, stopping at the decision.
func early(d draw, limit int) trial {
	var c calls
	start := time.Now()
	tally, err := fanout.Gather(context.Background(), d.tasks(&c), fanout.Vote(func(s string) string { return s }),
		fanout.WithLimit(limit))
	if err != nil {
		log.Fatal(err)
	}
	return trial{wall: time.Since(start), started: c.started.Load(), answered: c.answered.Load(), winner: tally.Winner}
}

// waitAll runs every voter with fanout.Run, then counts, breaking ties as
// Vote does: towards the answer of the earliest voter in input order.
func waitAll(d draw, limit int) trial {
	var c calls
	start := time.Now()
	rs, err := fanout.Run(context.Background(), d.tasks(&c), fanout.WithLimit(limit))
	if err != nil {
		log.Fatal(err)
	}
	counts := map[string]int{}
	winner := ""
	for _, r := range rs.All() {
		counts[r.Value]++
	}
	for _, r := range rs.All() {
		if winner == "" || counts[r.Value] > counts[winner] {
			winner = r.Value
		}
	}
	return trial{wall: time.Since(start), started: c.started.Load(), answered: c.answered.Load(), winner: winner}
}

// summary aggregates one method's trials.
type summary struct {
	mean, p50, p90    time.Duration
	started, answered float64
}

func summarise(ts []trial) summary {
	walls := make([]time.Duration, len(ts))
	var s summary
	var sum time.Duration
	for i, t := range ts {
		walls[i] = t.wall
		sum += t.wall
		s.started += float64(t.started)
		s.answered += float64(t.answered)
	}
	slices.Sort(walls)
	n := float64(len(ts))
	s.mean = sum / time.Duration(len(ts))
	s.p50 = walls[len(walls)/2]
	s.p90 = walls[len(walls)*9/10]
	s.started /= n
	s.answered /= n
	return s
}

func main() {
	trials := flag.Int("trials", 1000, "trials per p and limit")
	median := flag.Duration("median", 20*time.Millisecond, "median voter latency (lognormal, sigma 0.5)")
	parallel := flag.Int("parallel", 50, "trials in flight at once")
	flag.Parse()

	fmt.Printf("%d voters, latency lognormal median %v sigma 0.5; %d trials per row, both methods on the same draws\n\n",
		voters, *median, *trials)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "p\tl\tmethod\tmean wall\tp50\tp90\tcalls started\tcalls answered\tmean wall saved\tcalls started saved\tcalls answered saved\tsame winner\t")
	for _, p := range []float64{0.6, 0.8, 0.95} {
		for _, limit := range []int{voters, 2, 1} {
			rng := rand.New(rand.NewPCG(uint64(p*1000), uint64(limit)))
			draws := make([]draw, *trials)
			for i := range draws {
				draws[i] = newDraw(rng, p, *median)
			}
			votes := runAll(draws, *parallel, func(d draw) trial { return early(d, limit) })
			all := runAll(draws, *parallel, func(d draw) trial { return waitAll(d, limit) })
			same := 0
			for i := range votes {
				if votes[i].winner == all[i].winner {
					same++
				}
			}
			v, a := summarise(votes), summarise(all)
			fmt.Fprintf(tw, "%.2f\t%d\tRun, then count\t%s\t%s\t%s\t%.2f\t%.2f\t\t\t\t\t\n", p, limit,
				ms(a.mean), ms(a.p50), ms(a.p90), a.started, a.answered)
			fmt.Fprintf(tw, "%.2f\t%d\tGather+Vote\t%s\t%s\t%s\t%.2f\t%.2f\t%.0f%%\t%.0f%%\t%.0f%%\t%.1f%%\t\n", p, limit,
				ms(v.mean), ms(v.p50), ms(v.p90), v.started, v.answered,
				100*(1-float64(v.mean)/float64(a.mean)), 100*(1-v.started/a.started), 100*(1-v.answered/a.answered),
				100*float64(same)/float64(len(votes)))
		}
	}
	tw.Flush()
}

// runAll runs one method on every draw, parallel at a time, keeping the
// draws' order.
func runAll(draws []draw, parallel int, method func(draw) trial) []trial {
	out := make([]trial, len(draws))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(draws) {
					return
				}
				out[i] = method(draws[i])
			}
		})
	}
	wg.Wait()
	return out
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}
