package main

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"time"
)

// Config is what both crawlers are given.
type Config struct {
	Client   *http.Client
	Hosts    []string      // host:port of the site; links elsewhere are not followed
	Limit    int           // requests in flight at once
	PerHost  int           // requests in flight at once to one host
	Timeout  time.Duration // per request
	Attempts int           // per page, the first included
	Backoff  time.Duration // first wait before a retry the server did not time; doubles
	MaxWait  time.Duration // a longer Retry-After gives up at once
	Found    func()        // called once per URL the crawl will request, if set
}

// Report is what a crawl found: every URL it requested, by outcome.
type Report struct {
	Fetched  []string         // answered 200
	NotFound []string         // answered 404
	Failed   map[string]error // failed after every attempt
	Retries  int
}

func (r *Report) add(u string, err error, notFound bool) {
	switch {
	case err == nil:
		r.Fetched = append(r.Fetched, u)
	case notFound:
		r.NotFound = append(r.NotFound, u)
	default:
		if r.Failed == nil {
			r.Failed = map[string]error{}
		}
		r.Failed[u] = err
	}
}

// sort puts the URLs of r in order, since crawls find them in any.
func (r *Report) sort() {
	slices.Sort(r.Fetched)
	slices.Sort(r.NotFound)
}

func (c *Config) found() {
	if c.Found != nil {
		c.Found()
	}
}

// href finds links in a page. A regular expression is enough for the
// generated site; a crawler of the web would use golang.org/x/net/html.
var href = regexp.MustCompile(`href="([^"]*)"`)

// links reads the page at base from body and returns the URLs it links
// to on the site's hosts, without fragments (which name the same page).
func (c *Config) links(base string, body io.Reader) ([]string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	from, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	var links []string
	for _, m := range href.FindAllSubmatch(b, -1) {
		u, err := from.Parse(string(m[1]))
		if err != nil || u.Scheme != "http" || !slices.Contains(c.Hosts, u.Host) {
			continue
		}
		u.Fragment = ""
		links = append(links, u.String())
	}
	return links, nil
}

// host returns the host:port of u.
func host(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Host
}
