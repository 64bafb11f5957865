// Command classify labels the sentiment of 1 000 short texts, each by a
// majority vote of several samples of a classifier (self-consistency),
// with a bounded number of texts at once and one rate limit shared by
// every call. A progress bar shows the run; a summary tells the labels,
// the accuracy against the dataset, the calls made and saved, and the wall
// time against a one-call-at-a-time estimate.
//
// By default it runs offline: the texts come from templates, generated the
// same for the same -seed, and the classifier is a lexicon scorer with
// seeded noise per sample (so that votes sometimes disagree), a simulated
// latency per call and a simulated overload on a share of first tries.
// With ANTHROPIC_API_KEY set (and no -offline) the samples come from
// Claude instead, on 60 texts unless -n says otherwise.
//
//	go run ./classify
//	go run ./classify -n 200 -samples 7 -limit 64 -rps 500
//	go run ./classify -debug-addr 127.0.0.1:6060   # and open /debug/fanout/
//	go run ./classify -batch -input-price 1 -output-price 5
//
// Each text is one task of an outer fanout.Run (at most -limit at once);
// inside it, a fanout.Gather runs the samples (at most -inflight at once)
// into fanout.Vote, which stops the vote, and skips the samples not yet
// started, as soon as no other label can win. The samples of one text go
// one after another by default, since a sample already running when the
// vote is decided is a call made for nothing, while the other texts keep
// the rate limit busy. On 400 texts offline, -inflight 1 made 1 352 calls
// in 4.8 s; 3, 1 448 calls in 6.4 s; 5, 1 996 calls in 6.7 s.
//
// With -batch, every sample of every text is instead one request of the
// Message Batches API, at half the price, sent with
// fanoutanthropic.RunBatch: the batches are created, polled until they
// end, and each result is mapped back to its key ("TEXT/SAMPLE"), then
// the samples of each text are counted by fanout.Vote. A vote cannot stop
// early there: every sample is sent. With ANTHROPIC_API_KEY set (and no
// -offline) it is Anthropic's API, on the 1 000 texts unless -n says
// otherwise; by default, a fake of it on 127.0.0.1 that the program starts,
// answering with the lexicon scorer.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gofanout/fanout/examples/internal/debugpage"

	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
	fanoutdebug "github.com/gofanout/fanout/debug"
	"github.com/gofanout/fanout/examples/internal/progress"
)

// config is what the flags set.
type config struct {
	n        int
	samples  int
	inFlight int
	limit    int
	rps      float64
	seed     uint64
	noise    float64
	latency  time.Duration
	failRate float64
	model    string
	offline  bool
	debug    *fanoutdebug.Page // the -debug-addr page, or nil

	batch     bool // -batch: through the Message Batches API
	batchSize int
	prices    fanoutanthropic.Prices
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 1000, "texts to classify (60 by default with Claude, unless -batch)")
	flag.IntVar(&c.samples, "samples", 5, "samples per text")
	flag.IntVar(&c.inFlight, "inflight", 1, "samples of one text in flight at once")
	flag.IntVar(&c.limit, "limit", 32, "texts in flight at once")
	flag.Float64Var(&c.rps, "rps", 0, "calls per second, shared by all (default 300 offline, 4 with Claude)")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the dataset and of the offline classifier")
	flag.Float64Var(&c.noise, "noise", 0.5, "offline: noise on each sample's score")
	flag.DurationVar(&c.latency, "latency", 40*time.Millisecond, "offline: mean simulated latency of a call")
	flag.Float64Var(&c.failRate, "fail", 0.02, "offline: share of first tries failing with a simulated overload (with -batch: of requests ending errored)")
	flag.StringVar(&c.model, "model", "claude-haiku-4-5", "Claude model, with ANTHROPIC_API_KEY")
	flag.BoolVar(&c.offline, "offline", false, "use the offline classifier even with ANTHROPIC_API_KEY set")
	debugAddr := flag.String("debug-addr", "", "serve a live page of the runs at http://`ADDR`/debug/fanout/, until Ctrl-C")
	flag.BoolVar(&c.batch, "batch", false, "send every sample through the Message Batches API, at half the price: Anthropic's with ANTHROPIC_API_KEY, otherwise a fake on 127.0.0.1")
	flag.IntVar(&c.batchSize, "batch-size", fanoutanthropic.MaxBatchRequests, "with -batch: most requests in one batch; more are split into batches sent at once")
	flag.Float64Var(&c.prices.Input, "input-price", 0, "with -batch: US dollars per million input tokens, for the cost (Haiku 4.5: 1)")
	flag.Float64Var(&c.prices.Output, "output-price", 0, "with -batch: US dollars per million output tokens, for the cost (Haiku 4.5: 5)")
	flag.Parse()
	if c.batch {
		if err := batchMain(c, *debugAddr); err != nil {
			fmt.Fprintln(os.Stderr, "classify:", err)
			os.Exit(1)
		}
		return
	}
	nSet := false
	flag.Visit(func(f *flag.Flag) { nSet = nSet || f.Name == "n" })

	var clf Classifier = &Lexicon{Noise: c.noise, Latency: c.latency, FailRate: c.failRate, Seed: c.seed}
	rps := 300.0
	if os.Getenv("ANTHROPIC_API_KEY") != "" && !c.offline {
		clf, rps = NewClaude(c.model), 4
		if !nSet {
			c.n = 60
		}
	}
	if c.rps > 0 {
		rps = c.rps
	}
	c.rps = rps

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *debugAddr != "" {
		c.debug = fanoutdebug.New()
		wait, err := debugpage.Serve(ctx, *debugAddr, c.debug)
		if err != nil {
			fmt.Fprintln(os.Stderr, "classify:", err)
			os.Exit(1)
		}
		defer wait()
	}
	rep, err := run(ctx, c, clf, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "classify:", err)
		os.Exit(1)
	}
	rep.Print(os.Stdout)
}

// run classifies the dataset of c with clf, drawing progress on w.
func run(ctx context.Context, c config, clf Classifier, w io.Writer) (*Report, error) {
	items := Dataset(c.n, c.seed)
	bar := progress.New(len(items), w, "classify")
	var callTime atomic.Int64 // summed durations of every call
	// One limiter for every call of every text's vote. The Throttle around
	// it carries a server's Retry-After (a 429 or 529 from the API) to all
	// of them, not only to the vote that was told.
	calls := rate.NewLimiter(rate.Limit(c.rps), max(1, int(c.rps/20)))
	limiter := fanout.NewThrottle(calls)
	voter := &Voter{Classifier: clf, Samples: c.samples, InFlight: c.inFlight, Options: []fanout.Option{
		fanout.WithRateLimit(limiter),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4, InitialInterval: 200 * time.Millisecond}),
		fanout.WithObserver(bar.CallObserver()),
		fanout.WithObserver(&fanout.Observer{AttemptDone: func(_ context.Context, a fanout.AttemptInfo) {
			callTime.Add(int64(a.Elapsed))
		}}),
	}}
	outer := []fanout.Option{fanout.WithLimit(c.limit), fanout.WithObserver(bar.Observer())}
	if c.debug != nil {
		// Each text's vote is a run of its own on the page, under "vote".
		c.debug.ShowLimiter("calls", calls)
		c.debug.ShowLimiter("calls cooldown", limiter)
		voter.Options = append(voter.Options, fanout.WithObserver(c.debug.Observer("vote")))
		outer = append(outer, fanout.WithObserver(c.debug.Observer("classify texts")))
	}
	tasks := make([]fanout.Task[Verdict], len(items))
	for i, item := range items {
		tasks[i] = fanout.Task[Verdict]{Key: strconv.Itoa(item.ID), Do: func(ctx context.Context) (Verdict, error) {
			return voter.Classify(ctx, item)
		}}
	}
	start := time.Now()
	res, err := fanout.Run(ctx, tasks, outer...)
	if res == nil {
		bar.Stop()
		return nil, err // invalid input: nothing ran
	}
	wall := time.Since(start)
	snap := bar.Stop()
	rep := newReport(c, clf, items, res)
	rep.Calls, rep.Retries = snap.Calls, snap.Retries
	rep.Wall, rep.CallTime = wall, time.Duration(callTime.Load())
	return rep, nil
}
