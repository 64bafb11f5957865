// Crawl crawls a site, discovering its pages as it goes: each page is a
// task of a fanout.Group that adds a task for each link, and the group's
// keys (the URLs) make sure no page is fetched twice.
//
// By default it generates a site of 3 000 pages and serves it on
// 127.0.0.1, each of its hosts on a port of its own. Pages link to pages
// on their own host and on the others; some are slow, one in a few hundred
// hangs on its first request, some answer 503 once or twice (a tenth of
// those with Retry-After: 1), a few are always down, some links lead to
// pages that do not exist, and some leave the site, for a port nobody
// serves or an outside host, which the crawl must not follow. The same
// -seed gives the same site.
//
// The crawl runs at most -limit requests at once and at most -per-host to
// one host, gives each request -timeout, and retries up to -attempts times
// with backoff, waiting what Retry-After says. It shows a progress bar on
// a terminal (where the 404s count among the failures), then a summary.
//
//	go run ./crawl
//	go run ./crawl -pages 10000 -hosts 8 -limit 32 -per-host 2 -seed 7
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/examples/internal/progress"
)

// options are the program's flags.
type options struct {
	pages, hosts      int
	seed              uint64
	limit, perHost    int
	timeout           time.Duration
	attempts          int
	backoff, maxWait  time.Duration
	site              *siteConfig // nil: demoSite of pages, hosts and seed
	progress, summary io.Writer
}

func main() {
	o := options{progress: os.Stderr, summary: os.Stdout, backoff: 100 * time.Millisecond}
	flag.IntVar(&o.pages, "pages", 3000, "pages of the generated site")
	flag.IntVar(&o.hosts, "hosts", 4, "hosts the site is spread over, each a port of 127.0.0.1")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the generated site")
	flag.IntVar(&o.limit, "limit", 16, "requests in flight at once")
	flag.IntVar(&o.perHost, "per-host", 4, "requests in flight at once to one host")
	flag.DurationVar(&o.timeout, "timeout", 500*time.Millisecond, "deadline of each request")
	flag.IntVar(&o.attempts, "attempts", 3, "tries per page, the first included")
	flag.DurationVar(&o.maxWait, "max-wait", 5*time.Second, "longest wait before a retry; a longer Retry-After fails at once")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "crawl:", err)
		os.Exit(1)
	}
}

// run serves the site, crawls it and prints the summary.
func run(ctx context.Context, o options) error {
	cfg := demoSite(o.pages, o.hosts, o.seed)
	if o.site != nil {
		cfg = *o.site
	}
	if cfg.Pages < 1 || cfg.Hosts < 1 {
		return fmt.Errorf("want at least 1 page and 1 host, got %d and %d", cfg.Pages, cfg.Hosts)
	}
	srv, stop, err := serve(newSite(cfg))
	if err != nil {
		return err
	}
	defer stop()
	root := srv.url(0, 0)
	fmt.Fprintf(o.summary, "crawling %s: %d pages on %d hosts, seed %d\n", root, cfg.Pages, cfg.Hosts, cfg.Seed)
	fmt.Fprintf(o.summary, "%d requests at once, %d per host, %v per request, %d attempts\n\n",
		o.limit, o.perHost, o.timeout, o.attempts)

	bar := progress.New(0, o.progress, "crawl")
	c := o.config(srv.hosts)
	c.Found = func() { bar.AddTotal(1) }
	defer c.Client.CloseIdleConnections()
	start := time.Now()
	rep, err := Crawl(ctx, root, c, fanout.WithObserver(bar.Observer()))
	wall := time.Since(start)
	bar.Stop()
	if rep == nil {
		return err
	}
	if err != nil {
		fmt.Fprintf(o.summary, "stopped early (%v): the pages not fetched yet count as failed\n", err)
	}
	perHost, total := srv.peaks()
	printSummary(o.summary, rep, o, perHost, total, wall)
	return err
}

// config is the crawlers' Config for the flags and the site's hosts.
func (o options) config(hosts []string) Config {
	return Config{
		// Idle connections kept for as many requests as may go to one
		// host at once: net/http's default of 2 would make the others
		// dial anew each time.
		Client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.perHost}},
		Hosts:    hosts,
		Limit:    o.limit,
		PerHost:  o.perHost,
		Timeout:  o.timeout,
		Attempts: o.attempts,
		Backoff:  o.backoff,
		MaxWait:  o.maxWait,
	}
}

func printSummary(w io.Writer, r *Report, o options, perHost, total int, wall time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "pages fetched\t%d\n", len(r.Fetched))
	fmt.Fprintf(tw, "not found (404)\t%d\n", len(r.NotFound))
	fmt.Fprintf(tw, "failed after retries\t%d\n", len(r.Failed))
	fmt.Fprintf(tw, "retries\t%d\n", r.Retries)
	fmt.Fprintf(tw, "most in flight\t%d per host (-per-host %d), %d in all (-limit %d), as the servers saw them\n",
		perHost, o.perHost, total, o.limit)
	fmt.Fprintf(tw, "wall time\t%v\n", wall.Round(time.Millisecond))
	tw.Flush()
	failed := slices.Sorted(maps.Keys(r.Failed))
	for i, u := range failed {
		if i == 3 {
			fmt.Fprintf(w, "  ... and %d more\n", len(failed)-i)
			break
		}
		fmt.Fprintf(w, "  failed: %s: %v\n", u, r.Failed[u])
	}
}
