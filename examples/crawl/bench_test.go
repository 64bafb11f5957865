package main

import (
	"context"
	"testing"
	"time"
)

// benchSite is the demo's site at 1 000 pages, faster, and without the
// waits that would make the benchmark measure sleeping rather than
// crawling: no page hangs until its timeout, and no 503 asks for
// Retry-After's whole second (503s are still retried, after a 10 ms
// backoff).
func benchSite() siteConfig {
	cfg := demoSite(1000, 4, 1)
	cfg.Fast = [2]time.Duration{time.Millisecond, 5 * time.Millisecond}
	cfg.Slow = [2]time.Duration{20 * time.Millisecond, 50 * time.Millisecond}
	cfg.StallP, cfg.RetryAfter = 0, 0
	return cfg
}

// BenchmarkCrawl crawls the same site on loopback servers with each
// crawler, under the same limits: 16 requests at once, 4 per host.
func BenchmarkCrawl(b *testing.B) {
	srv, stop, err := serve(newSite(benchSite()))
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	want := srv.site.expect(srv.addrs, 3)
	o := options{limit: 16, perHost: 4, timeout: 2 * time.Second, attempts: 3,
		backoff: 10 * time.Millisecond, maxWait: 5 * time.Second}
	for _, cr := range crawlers {
		b.Run("impl="+cr.name, func(b *testing.B) {
			for b.Loop() {
				srv.reset()
				c := o.config(srv.hosts)
				rep, err := cr.crawl(context.Background(), srv.url(0, 0), c)
				c.Client.CloseIdleConnections()
				if err != nil || len(rep.Fetched) != len(want.fetched) {
					b.Fatalf("fetched %d pages, want %d (%v)", len(rep.Fetched), len(want.fetched), err)
				}
			}
			b.ReportMetric(float64(len(want.fetched)), "pages")
		})
	}
}
