package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// A profile describes one simulated source: how long it takes to answer
// and which of its answers are refusals.
type profile struct {
	name string
	// Latency is drawn per request: uniformly in fast, or, with
	// probability tailP, uniformly in tail.
	fast  [2]time.Duration
	tailP float64
	tail  [2]time.Duration
	// refuse lists the replies to the first requests, in order; once it
	// runs out the source answers normally, unless refuseAlways repeats
	// the last one for good.
	refuse       []refusal
	refuseAlways bool
}

// A refusal is an error reply, with the header that says when to come
// back (name and value; empty for none).
type refusal struct {
	status int
	header [2]string
}

// tooMany is a 429 refusal carrying header name: value.
func tooMany(name, value string) refusal {
	return refusal{status: http.StatusTooManyRequests, header: [2]string{name, value}}
}

// demoProfiles are the sources the program queries when no -url is given.
// They all sit behind one gateway with one request quota, which is why a
// 429 from any of them pauses the others too (the shared Throttle).
func demoProfiles() []profile {
	fast := [2]time.Duration{15 * time.Millisecond, 60 * time.Millisecond}
	tail := [2]time.Duration{900 * time.Millisecond, 1500 * time.Millisecond}
	return []profile{
		{name: "web", fast: fast, tailP: 0.05, tail: tail},
		{name: "wiki", fast: fast, tailP: 0.05, tail: tail},
		// A transient 503 without Retry-After: plain exponential backoff.
		{name: "news", fast: fast, tailP: 0.05, tail: tail,
			refuse: []refusal{{status: http.StatusServiceUnavailable}}},
		// Rate limited once, told to wait in seconds.
		{name: "scholar", fast: fast, tail: tail,
			refuse: []refusal{tooMany("Retry-After", "1")}},
		// Rate limited once, told to wait in milliseconds.
		{name: "forum", fast: fast, tail: tail,
			refuse: []refusal{tooMany("Retry-After-Ms", "300")}},
		// Mostly slow: the one hedging is for.
		{name: "archive", fast: fast, tailP: 0.7, tail: tail},
		// Out of quota for an hour: longer than the retry policy will wait.
		{name: "books", fast: fast, tail: tail,
			refuse: []refusal{tooMany("Retry-After", "3600")}, refuseAlways: true},
		// Never answers within the per-attempt timeout.
		{name: "patents", fast: [2]time.Duration{5 * time.Second, 5 * time.Second}},
	}
}

// fakeSource is the http.Handler of a simulated source. Its latencies
// come from its own seeded generator, so a given seed gives the same
// sequence of latencies for the source whatever the other sources do.
type fakeSource struct {
	p profile

	mu   sync.Mutex
	rng  *rand.Rand
	seen int // requests received
}

func newFakeSource(p profile, seed uint64) *fakeSource {
	h := fnv.New64a()
	h.Write([]byte(p.name))
	return &fakeSource{p: p, rng: rand.New(rand.NewPCG(seed, h.Sum64()))}
}

// next returns the n-th request's latency and refusal, if any.
func (s *fakeSource) next() (time.Duration, *refusal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.seen
	s.seen++
	span := s.p.fast
	if s.rng.Float64() < s.p.tailP {
		span = s.p.tail
	}
	latency := span[0]
	if d := span[1] - span[0]; d > 0 {
		latency += time.Duration(s.rng.Int64N(int64(d)))
	}
	switch {
	case n < len(s.p.refuse):
		return latency, &s.p.refuse[n]
	case s.p.refuseAlways && len(s.p.refuse) > 0:
		return latency, &s.p.refuse[len(s.p.refuse)-1]
	}
	return latency, nil
}

func (s *fakeSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	latency, refused := s.next()
	t := time.NewTimer(latency)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return // the client gave up: a lost hedge race or a timeout
	}
	if refused != nil {
		if name := refused.header[0]; name != "" {
			w.Header().Set(name, refused.header[1])
		}
		http.Error(w, http.StatusText(refused.status), refused.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(searchReply{Hits: s.search(r.URL.Query().Get("q"))})
}

// searchReply is the JSON body a simulated source answers with, and the
// shape the program understands from real sources too.
type searchReply struct {
	Hits []Hit `json:"hits"`
}

// aspects are the documents every simulated source knows about a query.
var aspects = []string{
	"an overview", "a survey", "benchmarks", "pitfalls",
	"in production", "FAQ", "history", "a tutorial",
}

// search returns four of the query's documents, ranked by a shuffle seeded
// with the source and the query, so that sources agree on some documents
// and disagree on their order.
func (s *fakeSource) search(q string) []Hit {
	h := fnv.New64a()
	h.Write([]byte(s.p.name + "\x00" + q))
	order := rand.New(rand.NewPCG(h.Sum64(), 0)).Perm(len(aspects))
	// A bias shared by all sources puts the first three aspects near the
	// top more often, as real engines agree on the obvious results.
	for i, a := range order[:4] {
		if a >= 3 && order[i+4] < 3 {
			order[i], order[i+4] = order[i+4], a
		}
	}
	hits := make([]Hit, 0, 4)
	for _, a := range order[:4] {
		hits = append(hits, Hit{
			Title: fmt.Sprintf("%s: %s", q, aspects[a]),
			URL:   "https://example.org/" + slug(q) + "/" + slug(aspects[a]),
		})
	}
	return hits
}

func slug(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
	}), "-")
}

// localSources serves each profile from its own HTTP server on an
// ephemeral loopback port, and returns the sources and a function that
// shuts the servers down.
func localSources(profiles []profile, seed uint64) ([]Source, func(), error) {
	var servers []*http.Server
	stop := func() {
		for _, s := range servers {
			s.Close()
		}
	}
	var sources []Source
	for _, p := range profiles {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("research: serving %s: %w", p.name, err)
		}
		srv := &http.Server{Handler: newFakeSource(p, seed), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go srv.Serve(ln)
		sources = append(sources, Source{Name: p.name, URL: "http://" + ln.Addr().String() + "/search"})
	}
	return sources, stop, nil
}
