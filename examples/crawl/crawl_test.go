package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// crawler is either implementation.
type crawler func(ctx context.Context, root string, c Config) (*Report, error)

var crawlers = []struct {
	name  string
	crawl crawler
}{
	{"fanout", func(ctx context.Context, root string, c Config) (*Report, error) { return Crawl(ctx, root, c) }},
	{"errgroup", crawlErrgroup},
	{"semaphores", crawlSemaphores},
}

// memTransport hands each request to the handler of its host, in memory:
// inside a testing/synctest bubble the site's latencies, timeouts and
// Retry-After waits are fake time. It records every request, those to
// hosts it does not know included, and answers those with an error.
type memTransport struct {
	hosts map[string]http.Handler

	mu   sync.Mutex
	seen []request
}

type request struct {
	url string
	at  time.Time
}

func (t *memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	t.seen = append(t.seen, request{req.URL.String(), time.Now()})
	t.mu.Unlock()
	h, ok := t.hosts[req.URL.Host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", req.URL.Host)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// requests returns the recorded requests.
func (t *memTransport) requests() []request {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.seen)
}

// memSite serves a site generated from cfg at host0.test, host1.test, ...
// through a memTransport; its dead address is host0.test:81.
func memSite(cfg siteConfig) (*server, *memTransport) {
	a := addrs{dead: "host0.test:81"}
	for h := range cfg.Hosts {
		a.hosts = append(a.hosts, fmt.Sprintf("host%d.test", h))
	}
	srv := newServer(newSite(cfg), a)
	t := &memTransport{hosts: map[string]http.Handler{}}
	for h, name := range a.hosts {
		t.hosts[name] = srv.handler(h)
	}
	return srv, t
}

// testSite has every kind of page and link, more often than the demo's.
func testSite(seed uint64) siteConfig {
	return siteConfig{
		Pages: 300, Hosts: 3, Seed: seed,
		Fast:  [2]time.Duration{time.Millisecond, 10 * time.Millisecond},
		Slow:  [2]time.Duration{100 * time.Millisecond, 300 * time.Millisecond},
		SlowP: 0.1, StallP: 0.02, FlakyP: 0.1, RetryAfter: 0.5, DownP: 0.03,
		BrokenP: 0.1, OutsideP: 0.2,
	}
}

func testConfig(client *http.Client, hosts []string) Config {
	return Config{
		Client: client, Hosts: hosts, Limit: 5, PerHost: 2, Timeout: time.Second,
		Attempts: 3, Backoff: 100 * time.Millisecond, MaxWait: 5 * time.Second,
	}
}

func TestCrawl(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		reports := map[string]*Report{}
		for _, cr := range crawlers {
			t.Run(fmt.Sprintf("%s/seed=%d", cr.name, seed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					srv, tr := memSite(testSite(seed))
					c := testConfig(&http.Client{Transport: tr}, srv.hosts)
					var found atomic.Int32
					c.Found = func() { found.Add(1) }
					rep, err := cr.crawl(t.Context(), srv.url(0, 0), c)
					require.NoError(t, err)
					reports[cr.name] = rep
					checkCrawl(t, srv, tr, rep, c)
					assert.Equal(t, len(rep.Fetched)+len(rep.NotFound)+len(rep.Failed), int(found.Load()),
						"Found is called once per URL requested")
				})
			})
		}
		t.Run(fmt.Sprintf("every crawler finds the same pages/seed=%d", seed), func(t *testing.T) {
			a := reports["fanout"]
			require.NotNil(t, a)
			for _, name := range []string{"errgroup", "semaphores"} {
				b := reports[name]
				require.NotNil(t, b, name)
				assert.Equal(t, a.Fetched, b.Fetched, name)
				assert.Equal(t, a.NotFound, b.NotFound, name)
				assert.Equal(t, slices.Sorted(maps.Keys(a.Failed)), slices.Sorted(maps.Keys(b.Failed)), name)
				assert.Equal(t, a.Retries, b.Retries, name)
			}
		})
	}
}

// checkCrawl checks a crawl's report against the site, and the limits
// against what the server saw.
func checkCrawl(t *testing.T, srv *server, tr *memTransport, rep *Report, c Config) {
	t.Helper()
	want := srv.site.expect(srv.addrs, c.Attempts)
	require.NotEmpty(t, want.failed, "the site has a page that never answers")
	require.NotEmpty(t, want.notFound, "the site has broken links")
	assert.Equal(t, want.fetched, rep.Fetched, "every reachable page, once")
	assert.Equal(t, want.notFound, rep.NotFound)
	assert.Equal(t, want.failed, slices.Sorted(maps.Keys(rep.Failed)))
	assert.Equal(t, want.retries, rep.Retries)

	for _, u := range want.fetched {
		assert.Equal(t, 1, srv.served[u], "%s served", u)
	}
	for _, r := range tr.requests() {
		assert.Contains(t, srv.hosts, host(r.url), "a request off the site")
	}

	perHost, total := srv.peaks()
	assert.LessOrEqual(t, perHost, c.PerHost, "most requests in flight to one host")
	assert.LessOrEqual(t, total, c.Limit, "most requests in flight")
	// And the limits are not met by chance, one request at a time.
	assert.Greater(t, total, c.PerHost, "most requests in flight")
}

// TestLinksOffTheSite checks that the site links off itself, and that no
// crawler follows those links.
func TestLinksOffTheSite(t *testing.T) {
	cfg := testSite(1)
	cfg.Pages, cfg.OutsideP = 50, 1 // every page links off the site
	for _, cr := range crawlers {
		t.Run(cr.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, tr := memSite(cfg)
				var page bytes.Buffer
				srv.site.render(&page, srv.addrs, 0)
				require.Contains(t, page.String(), "http://"+srv.dead+"/")
				_, err := cr.crawl(t.Context(), srv.url(0, 0), testConfig(&http.Client{Transport: tr}, srv.hosts))
				require.NoError(t, err)
				for _, r := range tr.requests() {
					assert.NotContains(t, r.url, srv.dead)
					assert.NotContains(t, r.url, externalHost)
				}
			})
		})
	}
}

// TestRetryAfter checks that a page answering 503 with Retry-After: 1 is
// asked again after that second (and fanout's spread of up to a fifth of
// it), and one answering 503 alone after the backoff.
func TestRetryAfter(t *testing.T) {
	cfg := siteConfig{Pages: 3, Hosts: 1, Seed: 1, Fast: [2]time.Duration{0, 0}}
	for _, cr := range crawlers {
		t.Run(cr.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, tr := memSite(cfg)
				srv.site.pages[1].fails, srv.site.pages[1].retryAfter = 1, true
				srv.site.pages[2].fails = 2
				rep, err := cr.crawl(t.Context(), srv.url(0, 0), testConfig(&http.Client{Transport: tr}, srv.hosts))
				require.NoError(t, err)
				assert.Len(t, rep.Fetched, 3)
				assert.Equal(t, 3, rep.Retries)

				times := map[string][]time.Time{}
				for _, r := range tr.requests() {
					times[r.url] = append(times[r.url], r.at)
				}
				told := times[srv.url(0, 1)]
				require.Len(t, told, 2)
				assert.GreaterOrEqual(t, told[1].Sub(told[0]), time.Second)
				assert.LessOrEqual(t, told[1].Sub(told[0]), 1200*time.Millisecond)
				backedOff := times[srv.url(0, 2)]
				require.Len(t, backedOff, 3)
				// The backoff starts at 100 ms and doubles, ±50%.
				assert.GreaterOrEqual(t, backedOff[1].Sub(backedOff[0]), 50*time.Millisecond)
				assert.LessOrEqual(t, backedOff[1].Sub(backedOff[0]), 150*time.Millisecond)
				assert.GreaterOrEqual(t, backedOff[2].Sub(backedOff[1]), 100*time.Millisecond)
				assert.LessOrEqual(t, backedOff[2].Sub(backedOff[1]), 300*time.Millisecond)
			})
		})
	}
}

// TestRun crawls a small site on real loopback servers and prints the
// summary.
func TestRun(t *testing.T) {
	cfg := testSite(1)
	cfg.Fast, cfg.Slow, cfg.StallP, cfg.RetryAfter = [2]time.Duration{0, time.Millisecond}, [2]time.Duration{0, 5 * time.Millisecond}, 0, 0
	var out bytes.Buffer
	o := options{limit: 8, perHost: 2, timeout: 5 * time.Second, attempts: 3, backoff: 10 * time.Millisecond,
		maxWait: time.Second, site: &cfg, progress: &out, summary: &out}
	require.NoError(t, run(context.Background(), o))
	for _, want := range []string{
		": 300 pages on 3 hosts, seed 1\n",
		"8 requests at once, 2 per host, 5s per request, 3 attempts\n",
		"\n  failed: http://127.0.0.1:",
		"\ncrawl: ",
	} {
		assert.Contains(t, out.String(), want)
	}
	m := regexp.MustCompile(`pages fetched +(\d+)\n(?s:.*)most in flight +(\d+) per host \(-per-host 2\), (\d+) in all \(-limit 8\)`).
		FindStringSubmatch(out.String())
	require.NotNil(t, m, out.String())
	fetched, perHost, total := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
	assert.Positive(t, fetched)
	assert.LessOrEqual(t, perHost, 2, "most in flight to one host")
	assert.LessOrEqual(t, total, 8, "most in flight")
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// TestCyclesAndDuplicateLinksFetchEachPageOnce crawls, over loopback, a
// hand-written site whose pages link to themselves and to each other in a
// cycle, several times over and in every spelling of the same URL: each
// crawler must request each page once, and find every page.
func TestCyclesAndDuplicateLinksFetchEachPageOnce(t *testing.T) {
	pages := map[string]string{
		"/a": `<a href="/a">self</a><a href="#top">self</a><a href="b">b</a><a href="/b#x">b</a><a href="./c">c</a>`,
		"/b": `<a href="/a">back</a><a href="/c">c</a><a href="/c">c again</a><a href="/b/../a">a</a>`,
		"/c": `<a href="HOST/a">a</a><a href="HOST/b#y">b</a><a href="/c">self</a>`,
	}
	for _, cr := range crawlers {
		t.Run(cr.name, func(t *testing.T) {
			var mu sync.Mutex
			requests := map[string]int{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				requests[r.URL.Path]++
				mu.Unlock()
				body, ok := pages[r.URL.Path]
				if !ok {
					http.NotFound(w, r)
					return
				}
				fmt.Fprint(w, strings.ReplaceAll(body, "HOST", "http://"+r.Host))
			}))
			defer srv.Close()
			client := &http.Client{}
			defer client.CloseIdleConnections()
			rep, err := cr.crawl(t.Context(), srv.URL+"/a", testConfig(client, []string{srv.Listener.Addr().String()}))
			require.NoError(t, err)
			assert.Equal(t, []string{srv.URL + "/a", srv.URL + "/b", srv.URL + "/c"}, rep.Fetched)
			assert.Empty(t, rep.NotFound)
			assert.Empty(t, rep.Failed)
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, map[string]int{"/a": 1, "/b": 1, "/c": 1}, requests)
		})
	}
}
