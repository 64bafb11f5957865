package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"
)

// siteConfig describes the site to generate. The same config, seed
// included, gives the same pages, links and failures.
type siteConfig struct {
	Pages, Hosts int
	Seed         uint64

	Fast, Slow [2]time.Duration // latency ranges of a page
	SlowP      float64          // share of slow pages
	StallP     float64          // pages whose first request hangs until the client gives up
	FlakyP     float64          // pages that answer 503 once or twice, then 200
	RetryAfter float64          // share of the flaky pages whose 503s say "Retry-After: 1"
	DownP      float64          // pages that always answer 503
	BrokenP    float64          // per page, the chance of a link to a page that does not exist
	OutsideP   float64          // per page, the chance of a link off the site
}

// demoSite is the site the program crawls by default.
func demoSite(pages, hosts int, seed uint64) siteConfig {
	return siteConfig{
		Pages: pages, Hosts: hosts, Seed: seed,
		Fast:  [2]time.Duration{time.Millisecond, 10 * time.Millisecond},
		Slow:  [2]time.Duration{50 * time.Millisecond, 250 * time.Millisecond},
		SlowP: 0.03, StallP: 0.002, FlakyP: 0.03, RetryAfter: 0.1, DownP: 0.005,
		BrokenP: 0.03, OutsideP: 0.05,
	}
}

// A site is a generated set of pages spread over hosts. Page 0, on host 0,
// is the root; every page is linked from an earlier one, so every page is
// reachable from the root unless a page on the way is down.
type site struct {
	cfg   siteConfig
	pages []page
}

type page struct {
	host       int
	links      []link
	latency    time.Duration
	stall      bool // the first request hangs
	fails      int  // 503s before the first 200; -1: always
	retryAfter bool // the 503s say "Retry-After: 1"
}

// A link points to a page of the site, to a page that does not exist
// (a 404), to a port on 127.0.0.1 nobody serves, or to a host outside.
type link struct {
	kind     linkKind
	host, id int
	fragment bool // "#top" added, which names the same page
}

type linkKind int

const (
	toPage linkKind = iota
	toMissing
	toDeadPort
	toExternal
)

func newSite(cfg siteConfig) *site {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	s := &site{cfg: cfg, pages: make([]page, cfg.Pages)}
	for i := range s.pages {
		p := &s.pages[i]
		if i > 0 {
			p.host = rng.IntN(cfg.Hosts)
			parent := &s.pages[rng.IntN(i)]
			parent.links = append(parent.links, link{kind: toPage, host: p.host, id: i, fragment: rng.IntN(10) == 0})
		}
		p.latency = between(rng, cfg.Fast)
		if rng.Float64() < cfg.SlowP {
			p.latency = between(rng, cfg.Slow)
		}
		switch f := rng.Float64(); {
		case i == 0: // the root always answers
		case f < cfg.DownP:
			p.fails = -1
		case f < cfg.DownP+cfg.StallP:
			p.stall = true
		case f < cfg.DownP+cfg.StallP+cfg.FlakyP:
			p.fails = 1 + rng.IntN(2)
			p.retryAfter = rng.Float64() < cfg.RetryAfter
		}
	}
	for i := range s.pages {
		s.pages[i].links = append(s.pages[i].links, s.extraLinks(rng)...)
	}
	return s
}

// extraLinks returns the links a page has beyond the one to each of its
// children: to other pages (so most pages are linked more than once), to
// missing pages and off the site.
func (s *site) extraLinks(rng *rand.Rand) []link {
	var links []link
	for range rng.IntN(4) {
		id := rng.IntN(s.cfg.Pages)
		links = append(links, link{kind: toPage, host: s.pages[id].host, id: id})
	}
	if rng.Float64() < s.cfg.BrokenP {
		links = append(links, link{kind: toMissing, host: rng.IntN(s.cfg.Hosts), id: s.cfg.Pages + rng.IntN(s.cfg.Pages)})
	}
	if rng.Float64() < s.cfg.OutsideP {
		links = append(links, link{kind: toDeadPort + linkKind(rng.IntN(2)), id: rng.IntN(s.cfg.Pages)})
	}
	rng.Shuffle(len(links), func(i, j int) { links[i], links[j] = links[j], links[i] })
	return links
}

func between(rng *rand.Rand, span [2]time.Duration) time.Duration {
	return span[0] + time.Duration(rng.Int64N(int64(span[1]-span[0])+1))
}

// addrs are where a site is served: host i at hosts[i], and a dead
// address where nothing listens.
type addrs struct {
	hosts []string
	dead  string
}

const externalHost = "example.com"

// url returns the absolute URL of page id on host h.
func (a addrs) url(h, id int) string { return fmt.Sprintf("http://%s/p/%d", a.hosts[h], id) }

// href is how page from refers to l: by path on its own host, by URL
// elsewhere.
func (a addrs) href(from int, l link) string {
	var u string
	switch l.kind {
	case toPage, toMissing:
		u = a.url(l.host, l.id)
		if l.host == from {
			u = fmt.Sprintf("/p/%d", l.id)
		}
	case toDeadPort:
		u = fmt.Sprintf("http://%s/p/%d", a.dead, l.id)
	case toExternal:
		u = fmt.Sprintf("https://%s/p/%d", externalHost, l.id)
	}
	if l.fragment {
		u += "#top"
	}
	return u
}

// render writes page id as HTML.
func (s *site) render(w io.Writer, a addrs, id int) {
	p := &s.pages[id]
	fmt.Fprintf(w, "<!doctype html>\n<title>page %d</title>\n<h1>Page %d</h1>\n<ul>\n", id, id)
	for _, l := range p.links {
		fmt.Fprintf(w, "<li><a href=\"%s\">page %d</a>\n", a.href(p.host, l), l.id)
	}
	fmt.Fprintln(w, "</ul>")
}

// want is what a crawl of a site must find.
type want struct {
	fetched, notFound, failed []string // sorted
	retries                   int
}

// expect returns what a crawl from the root that tries each page up to
// attempts times must find: the URLs that answer 200, those that answer
// 404, those that fail after every attempt, and the retries on the way.
func (s *site) expect(a addrs, attempts int) want {
	var w want
	seen := map[int]bool{0: true}
	missing := map[string]bool{}
	for queue := []int{0}; len(queue) > 0; queue = queue[1:] {
		p := &s.pages[queue[0]]
		u := a.url(p.host, queue[0])
		switch {
		case p.fails < 0 || p.fails >= attempts || p.stall && attempts < 2:
			w.failed = append(w.failed, u)
			w.retries += attempts - 1
			continue
		case p.stall:
			w.retries++
		default:
			w.retries += p.fails
		}
		w.fetched = append(w.fetched, u)
		for _, l := range p.links {
			switch {
			case l.kind == toMissing && !missing[a.url(l.host, l.id)]:
				missing[a.url(l.host, l.id)] = true
				w.notFound = append(w.notFound, a.url(l.host, l.id))
			case l.kind == toPage && !seen[l.id]:
				seen[l.id] = true
				queue = append(queue, l.id)
			}
		}
	}
	slices.Sort(w.fetched)
	slices.Sort(w.notFound)
	slices.Sort(w.failed)
	return w
}
