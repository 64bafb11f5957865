package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// crawlErrgroup is Crawl written by hand with errgroup, as a careful user
// would without fanout. It is here only to be compared with Crawl: by the
// tests, which check that both find the same pages, and by BenchmarkCrawl.
//
// errgroup's Go blocks while the slots of SetLimit are all taken, and the
// callers here would be the very tasks that hold them: once every task is
// adding links, none can return, and the crawl deadlocks. So tasks call
// TryGo, and a URL found while the group is full goes on a backlog that
// each task works through before it returns. The task that put a URL there
// is still running, so it cannot be left behind.
func crawlErrgroup(ctx context.Context, root string, c Config) (*Report, error) {
	cr := &handCrawler{c: c, seen: map[string]bool{}, hosts: map[string]*semaphore.Weighted{}, rep: &Report{}}
	cr.g.SetLimit(c.Limit)
	cr.visit(ctx, root)
	cr.g.Wait() // tasks return no error: each page's is in the report
	cr.rep.Retries = int(cr.retries.Load())
	cr.rep.sort()
	return cr.rep, context.Cause(ctx)
}

type handCrawler struct {
	c       Config
	g       errgroup.Group
	retries atomic.Int64

	mu      sync.Mutex
	seen    map[string]bool
	backlog []string // found while the group was full
	hosts   map[string]*semaphore.Weighted
	rep     *Report
}

// visit crawls u unless it was seen already: in a task of its own if the
// group has room, otherwise from the backlog.
func (cr *handCrawler) visit(ctx context.Context, u string) {
	cr.mu.Lock()
	if cr.seen[u] {
		cr.mu.Unlock()
		return
	}
	cr.seen[u] = true
	cr.mu.Unlock()
	cr.c.found()
	if !cr.g.TryGo(func() error { cr.work(ctx, u); return nil }) {
		cr.mu.Lock()
		cr.backlog = append(cr.backlog, u)
		cr.mu.Unlock()
	}
}

// work crawls u, then URLs from the backlog until it is empty.
func (cr *handCrawler) work(ctx context.Context, u string) {
	for ok := true; ok; u, ok = cr.next() {
		cr.crawl(ctx, u)
	}
}

func (cr *handCrawler) next() (string, bool) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if len(cr.backlog) == 0 {
		return "", false
	}
	u := cr.backlog[0]
	cr.backlog = cr.backlog[1:]
	return u, true
}

// crawl fetches u under its host's limit, records the outcome and visits
// the links. The task holds its errgroup slot while it waits for the host:
// a task for a busy host keeps a slot from a task for an idle one.
func (cr *handCrawler) crawl(ctx context.Context, u string) {
	sem := cr.hostLimit(host(u))
	if err := sem.Acquire(ctx, 1); err != nil {
		cr.record(u, err)
		return
	}
	links, err := cr.fetch(ctx, u)
	sem.Release(1)
	cr.record(u, err)
	for _, l := range links {
		cr.visit(ctx, l)
	}
}

func (cr *handCrawler) hostLimit(h string) *semaphore.Weighted {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	s, ok := cr.hosts[h]
	if !ok {
		s = semaphore.NewWeighted(int64(cr.c.PerHost))
		cr.hosts[h] = s
	}
	return s
}

func (cr *handCrawler) record(u string, err error) {
	var status *statusError
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.rep.add(u, err, errors.As(err, &status) && status.code == http.StatusNotFound)
}

// fetch gets page u, retrying network errors, timeouts, 429s and 5xx:
// after what Retry-After says, or else after an exponential backoff with
// jitter.
func (cr *handCrawler) fetch(ctx context.Context, u string) ([]string, error) {
	backoff := cr.c.Backoff
	for attempt := 1; ; attempt++ {
		links, err := cr.get(ctx, u)
		var status *statusError
		switch {
		case err == nil || attempt == cr.c.Attempts || ctx.Err() != nil:
			return links, err
		case errors.As(err, &status) && status.code < 500 && status.code != http.StatusTooManyRequests:
			return nil, err
		}
		wait := min(backoff/2+rand.N(backoff), cr.c.MaxWait)
		switch {
		case status != nil && status.retryAfter > cr.c.MaxWait:
			return nil, err
		case status != nil && status.retryAfter > 0:
			wait = status.retryAfter
		default:
			backoff *= 2
		}
		cr.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
	}
}

// statusError is an answer other than 200, with the delay its
// Retry-After header asks for.
type statusError struct {
	code       int
	retryAfter time.Duration
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d", e.code) }

// get makes one request for u, under its own deadline.
func (cr *handCrawler) get(ctx context.Context, u string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, cr.c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := cr.c.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode, retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return cr.c.links(u, resp.Body)
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) time.Duration {
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}
