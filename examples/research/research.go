package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/gofanout/fanout"
)

// Source is one place to send the query: a name for the report and a URL.
// A URL containing {q} gets the escaped query there; any other gets it as
// the q parameter.
type Source struct {
	Name string
	URL  string
}

// Hit is one search result.
type Hit struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

// Answer is what one source said about the query.
type Answer struct {
	Hits  []Hit
	Bytes int // size of the response body
}

// Config holds what research needs besides the sources. The zero value
// queries every source once, with no retry, hedge, limit or timeout.
type Config struct {
	Query  string
	Client *http.Client // nil means http.DefaultClient
	// Limiter paces every attempt, hedged copies and retries included.
	// Pass a *fanout.Throttle to share the cooldown that a 429 sets with
	// other runs using the same Throttle.
	Limiter     fanout.Limiter
	Retry       *fanout.RetryPolicy
	Hedge       *fanout.HedgePolicy
	TaskTimeout time.Duration // per attempt
	Timeout     time.Duration // whole run
	Observers   []*fanout.Observer
}

// Report is the outcome of one research run.
type Report struct {
	Query   string
	Sources []SourceReport // in the order of the sources given
	Merged  []Ranked
	Elapsed time.Duration
}

// SourceReport is one source's Result, with what the retries and hedges
// did for it.
type SourceReport struct {
	fanout.Result[Answer]
	Retries  []fanout.RetryInfo
	HedgeWon bool // a hedged copy gave the answer
}

// maxBody caps how much of a response research reads.
const maxBody = 1 << 20

// research sends cfg.Query to every source at once and waits for each to
// answer, fail or time out. Every source gets exactly one SourceReport;
// the error is only for an invalid configuration.
func research(ctx context.Context, sources []Source, cfg Config) (*Report, error) {
	j := newJournal()
	opts := []fanout.Option{fanout.WithObserver(j.observer())}
	if cfg.Limiter != nil {
		opts = append(opts, fanout.WithRequestLimit(cfg.Limiter))
	}
	if cfg.Retry != nil {
		opts = append(opts, fanout.WithRetry(*cfg.Retry))
	}
	if cfg.Hedge != nil {
		opts = append(opts, fanout.WithHedge(*cfg.Hedge))
	}
	if cfg.TaskTimeout > 0 {
		opts = append(opts, fanout.WithTaskTimeout(cfg.TaskTimeout))
	}
	if cfg.Timeout > 0 {
		opts = append(opts, fanout.WithTimeout(cfg.Timeout))
	}
	for _, o := range cfg.Observers {
		opts = append(opts, fanout.WithObserver(o))
	}
	client := cfg.Client
	if client == nil {
		client = http.DefaultClient
	}
	tasks := make([]fanout.Task[Answer], len(sources))
	for i, s := range sources {
		tasks[i] = fanout.Task[Answer]{Key: s.Name, Do: fetcher(client, s, cfg.Query)}
	}

	start := time.Now()
	report := func(_ context.Context, results []fanout.Result[Answer]) (*Report, error) {
		r := &Report{Query: cfg.Query, Merged: merge(results)}
		for _, res := range results {
			retries, won := j.of(res.Key)
			r.Sources = append(r.Sources, SourceReport{Result: res, Retries: retries, HedgeWon: won})
		}
		return r, nil
	}
	r, err := fanout.Gather(ctx, tasks, fanout.Collect(report), opts...)
	if err != nil {
		return nil, err
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

// fetcher returns the task that asks source s about q.
func fetcher(client *http.Client, s Source, q string) func(context.Context) (Answer, error) {
	target := queryURL(s.URL, q)
	return func(ctx context.Context) (Answer, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return Answer{}, err
		}
		req.Header.Set("Accept", "application/json, text/html;q=0.9, */*;q=0.5")
		resp, err := client.Do(req)
		if err != nil {
			return Answer{}, err
		}
		defer resp.Body.Close()
		if err := fanout.CheckResponse(resp); err != nil {
			// Read a little so the connection can be reused.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			return Answer{}, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return Answer{}, fmt.Errorf("research: reading %s: %w", s.Name, err)
		}
		if resp.Request != nil {
			req = resp.Request // the last of any redirects
		}
		return Answer{Hits: hits(req.URL.String(), body), Bytes: len(body)}, nil
	}
}

// queryURL puts q into u: in place of {q}, or as the q parameter.
func queryURL(u, q string) string {
	if strings.Contains(u, "{q}") {
		return strings.ReplaceAll(u, "{q}", url.QueryEscape(q))
	}
	parsed, err := url.Parse(u)
	if err != nil {
		return u // the request reports it
	}
	v := parsed.Query()
	v.Set("q", q)
	parsed.RawQuery = v.Encode()
	return parsed.String()
}

var titleRE = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)

// hits reads a response body: the JSON the simulated sources send, or
// else a page whose title (or first line) stands for one hit.
func hits(from string, body []byte) []Hit {
	var reply searchReply
	if json.Unmarshal(body, &reply) == nil && len(reply.Hits) > 0 {
		return reply.Hits
	}
	title := ""
	if m := titleRE.FindSubmatch(body); m != nil {
		title = string(m[1])
	} else if line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n"); line != "" {
		title = line
	}
	title = strings.Join(strings.Fields(title), " ")
	if title == "" {
		return nil
	}
	if len(title) > 80 {
		title = title[:77] + "..."
	}
	return []Hit{{Title: title, URL: from}}
}
