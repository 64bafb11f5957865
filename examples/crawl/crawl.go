package main

import (
	"context"
	"errors"
	"net/http"

	"github.com/gofanout/fanout"
)

// Crawl fetches root and every page of c.Hosts that it leads to, each
// once, with a fanout.Group: each page is a task, keyed by its URL, that
// adds a task for each of its links, and the group refuses a key it
// already has. The group starts at most c.Limit tasks at once and at most
// c.PerHost per host (the task's Resource), taking the first task whose
// host has room rather than waiting behind one whose host is busy; it
// gives each request c.Timeout and retries 503s, waiting what Retry-After
// says. opts are added to the group's (an observer, say).
func Crawl(ctx context.Context, root string, c Config, opts ...fanout.Option) (*Report, error) {
	g, err := fanout.NewGroup[int](ctx, append([]fanout.Option{
		fanout.WithLimit(c.Limit),
		fanout.WithResourceLimit(c.PerHost),
		fanout.WithTaskTimeout(c.Timeout),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: c.Attempts, InitialInterval: c.Backoff, MaxWait: c.MaxWait}),
	}, opts...)...)
	if err != nil {
		return nil, err
	}
	var visit func(u string)
	visit = func(u string) {
		err := g.GoTask(fanout.Task[int]{Key: u, Resource: host(u), Do: func(ctx context.Context) (int, error) {
			links, err := fetch(ctx, c, u)
			for _, l := range links {
				visit(l)
			}
			return len(links), err
		}})
		if err == nil { // otherwise a duplicate: the page is seen already
			c.found()
		}
	}
	visit(root)
	results, _ := g.Wait() // each page's error is in its Result
	rep := &Report{}
	for _, r := range results.All() {
		var status *fanout.HTTPError
		rep.add(r.Key, r.Err, errors.As(r.Err, &status) && status.StatusCode == http.StatusNotFound)
		rep.Retries += max(r.Attempts-1, 0)
	}
	rep.sort()
	return rep, context.Cause(ctx)
}

// fetch gets page u and returns its links to the site. CheckResponse
// makes a 503 an error that carries its Retry-After, for the retry to
// wait, and a 404 one that is not retried.
func fetch(ctx context.Context, c Config, u string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := fanout.CheckResponse(resp); err != nil {
		return nil, err
	}
	return c.links(u, resp.Body)
}
