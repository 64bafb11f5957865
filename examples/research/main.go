// Research sends one query to several search and knowledge sources at
// once and merges what they answer: the "query several sources at once"
// pattern, with the failures such sources really have.
//
// By default it starts eight simulated sources on 127.0.0.1, real HTTP
// servers whose latencies come from a seeded generator (mostly fast, with
// a slow tail) and some of which refuse with 429 Too Many Requests and a
// Retry-After header, in seconds or in milliseconds. The run retries
// (waiting as long as each server asks, and pausing the shared request
// limiter for everyone meanwhile), hedges slow requests, times out the
// ones that hang, and prints a line as each of these happens, then a table
// of the sources, the merged answer and what the resilience features did.
//
//	go run ./research
//	go run ./research -seed 7 -v
//	go run ./research -debug-addr 127.0.0.1:6060   # and open /debug/fanout/
//	go run ./research -q 'hedged requests' -url wiki='https://en.wikipedia.org/w/index.php?search={q}'
//
// With -url, the query goes to those URLs instead: {q} in a URL is
// replaced by the escaped query, otherwise it is added as the q parameter.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/gofanout/fanout/examples/internal/debugpage"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
	"golang.org/x/time/rate"
)

// options are the program's flags.
type options struct {
	query       string
	urls        []Source
	seed        uint64
	rps         float64
	burst       int
	attempts    int
	maxWait     time.Duration
	hedge       time.Duration
	hedgeExtra  float64
	taskTimeout time.Duration
	timeout     time.Duration
	verbose     bool
	profiles    []profile         // simulated sources; nil means demoProfiles
	debug       *fanoutdebug.Page // the -debug-addr page, or nil
}

func main() {
	var o options
	flag.StringVar(&o.query, "q", "tail latency", "the query")
	flag.Func("url", "a source as `name=URL`, repeatable; {q} in URL is replaced by the query", func(s string) error {
		src, err := parseSource(s)
		if err == nil {
			o.urls = append(o.urls, src)
		}
		return err
	})
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the simulated sources' latencies")
	flag.Float64Var(&o.rps, "rps", 20, "requests per second across all sources")
	flag.IntVar(&o.burst, "burst", 8, "requests allowed at once above the rate")
	flag.IntVar(&o.attempts, "attempts", 3, "tries per source, the first included")
	flag.DurationVar(&o.maxWait, "max-wait", 5*time.Second, "longest wait before a retry; a longer Retry-After fails at once")
	flag.DurationVar(&o.hedge, "hedge", 150*time.Millisecond, "start a second copy of a request still running after this long")
	flag.Float64Var(&o.hedgeExtra, "hedge-extra", 0.5, "hedged copies allowed, as a fraction of the sources")
	flag.DurationVar(&o.taskTimeout, "task-timeout", 600*time.Millisecond, "deadline of each request")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Second, "deadline of the whole run")
	flag.BoolVar(&o.verbose, "v", false, "log every attempt and limiter wait (fanout.SlogObserver) to stderr")
	debugAddr := flag.String("debug-addr", "", "serve a live page of the run at http://`ADDR`/debug/fanout/, until Ctrl-C")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *debugAddr != "" {
		o.debug = fanoutdebug.New()
		wait, err := debugpage.Serve(ctx, *debugAddr, o.debug)
		if err != nil {
			fmt.Fprintln(os.Stderr, "research:", err)
			os.Exit(1)
		}
		defer wait()
	}
	if err := run(ctx, os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "research:", err)
		os.Exit(1)
	}
}

// parseSource reads a -url flag.
func parseSource(s string) (Source, error) {
	name, raw, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Source{}, fmt.Errorf("want name=URL, got %q", s)
	}
	u, err := url.Parse(strings.ReplaceAll(raw, "{q}", "q"))
	if err != nil {
		return Source{}, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Source{}, fmt.Errorf("%s: want an http or https URL, got %q", name, raw)
	}
	return Source{Name: name, URL: raw}, nil
}

// run queries the sources o names, or simulated ones, and prints the
// report to w.
func run(ctx context.Context, w io.Writer, o options) error {
	sources := o.urls
	if len(sources) == 0 {
		profiles := o.profiles
		if profiles == nil {
			profiles = demoProfiles()
		}
		local, stop, err := localSources(profiles, o.seed)
		if err != nil {
			return err
		}
		defer stop()
		sources = local
		fmt.Fprintf(w, "%d simulated sources on 127.0.0.1, seed %d\n", len(sources), o.seed)
	}
	cfg := o.config(w)
	fmt.Fprintf(w, "query %q: %.0f req/s (burst %d) shared, %d attempts, hedge after %v, %v per attempt\n\n",
		o.query, o.rps, o.burst, o.attempts, o.hedge, o.taskTimeout)
	r, err := research(ctx, sources, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(w)
	printReport(w, r, cfg.Retry.MaxWait)
	return nil
}

// config turns the flags into a research Config whose live events go to w.
func (o options) config(w io.Writer) Config {
	requests := rate.NewLimiter(rate.Limit(o.rps), o.burst)
	cfg := Config{
		Query: o.query,
		// One Throttle for every source: they share a quota, so a 429 from
		// any of them pauses the requests to all. Runs given the same
		// Throttle would share the pause too.
		Limiter:     fanout.NewThrottle(requests),
		Retry:       &fanout.RetryPolicy{MaxAttempts: o.attempts, MaxWait: o.maxWait},
		Hedge:       &fanout.HedgePolicy{Delay: o.hedge, MaxExtra: o.hedgeExtra},
		TaskTimeout: o.taskTimeout,
		Timeout:     o.timeout,
		Observers:   []*fanout.Observer{liveObserver(w)},
	}
	if o.verbose {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.Observers = append(cfg.Observers, fanout.SlogObserver(log))
	}
	if o.debug != nil {
		o.debug.ShowLimiter("requests", requests)
		o.debug.ShowLimiter("requests cooldown", cfg.Limiter)
		cfg.Observers = append(cfg.Observers, o.debug.Observer("research"))
	}
	return cfg
}
