package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// server answers the requests to a site, each host with its own handler,
// and watches them: how many were in flight at once, per host and in all,
// and how often each URL was asked for and served. A server is safe for
// concurrent use.
type server struct {
	site *site
	addrs

	mu          sync.Mutex
	inFlight    map[string]int // by host
	maxInFlight map[string]int
	total       int // in flight on every host
	maxTotal    int
	requests    map[string]int // by URL
	served      map[string]int // 200s by URL
}

func newServer(s *site, a addrs) *server {
	return &server{site: s, addrs: a, inFlight: map[string]int{}, maxInFlight: map[string]int{},
		requests: map[string]int{}, served: map[string]int{}}
}

// serve serves s on a listener of 127.0.0.1 per host, and returns the
// server and a function that shuts it down.
func serve(s *site) (*server, func(), error) {
	var listeners []net.Listener
	closeAll := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	var a addrs
	for range s.cfg.Hosts + 1 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("crawl: serving the site: %w", err)
		}
		listeners = append(listeners, ln)
		a.hosts = append(a.hosts, ln.Addr().String())
	}
	// The last port was only taken to be given up: nobody serves it.
	a.hosts, a.dead = a.hosts[:s.cfg.Hosts], a.hosts[s.cfg.Hosts]
	listeners[s.cfg.Hosts].Close()
	listeners = listeners[:s.cfg.Hosts]

	srv := newServer(s, a)
	var servers []*http.Server
	for h, ln := range listeners {
		hs := &http.Server{Handler: srv.handler(h), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, hs)
		go hs.Serve(ln)
	}
	return srv, func() {
		for _, hs := range servers {
			hs.Close()
		}
	}, nil
}

// handler serves the pages of host h: after the page's latency, a 503 if
// the page is failing, else the page.
func (s *server) handler(h int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/p/"))
		url := "http://" + s.hosts[h] + r.URL.Path
		n := s.begin(s.hosts[h], url)
		if err != nil || id < 0 || id >= len(s.site.pages) || s.site.pages[id].host != h {
			s.end(s.hosts[h], url, 0)
			http.NotFound(w, r)
			return
		}
		p := &s.site.pages[id]
		latency := p.latency
		if p.stall && n == 0 {
			latency = time.Hour
		}
		if !sleep(r.Context(), latency) {
			s.end(s.hosts[h], url, 0)
			return // the client gave up
		}
		if p.fails < 0 || n < p.fails {
			s.end(s.hosts[h], url, http.StatusServiceUnavailable)
			if p.retryAfter {
				w.Header().Set("Retry-After", "1")
			}
			http.Error(w, "overloaded, come back later", http.StatusServiceUnavailable)
			return
		}
		// Out of flight before the first byte goes out, so that a client
		// that has read the answer never sees its request still counted.
		s.end(s.hosts[h], url, http.StatusOK)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		s.site.render(w, s.addrs, id)
	})
}

// begin counts a request in flight and returns how many requests for url
// came before it. A request the client gave up on (a timeout) stays
// counted until its handler notices, a moment later: over real sockets
// the count can so include, briefly, a request the crawler no longer
// holds. The tests count over an in-memory transport, where it cannot.
func (s *server) begin(host, url string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight[host]++
	s.maxInFlight[host] = max(s.maxInFlight[host], s.inFlight[host])
	s.total++
	s.maxTotal = max(s.maxTotal, s.total)
	n := s.requests[url]
	s.requests[url]++
	return n
}

func (s *server) end(host, url string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight[host]--
	s.total--
	if status == http.StatusOK {
		s.served[url]++
	}
}

// reset forgets every request, so that the site fails again as it did
// for the first crawl.
func (s *server) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.maxInFlight)
	clear(s.requests)
	clear(s.served)
	s.maxTotal = 0
}

// peaks returns the most requests in flight at once on any one host, and
// on all of them.
func (s *server) peaks() (perHost, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.maxInFlight {
		perHost = max(perHost, n)
	}
	return perHost, s.maxTotal
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
