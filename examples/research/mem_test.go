package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
)

// memTransport is an http.RoundTripper that hands each request to the
// simulated source named by its host, in memory, with no network at all:
// inside a testing/synctest bubble its latencies are fake time.
type memTransport map[string]http.Handler

// memSources returns sources for the profiles at http://NAME/search, and
// a client that reaches them through a memTransport.
func memSources(profiles []profile, seed uint64) ([]Source, *http.Client) {
	t := memTransport{}
	var sources []Source
	for _, p := range profiles {
		t[p.name] = newFakeSource(p, seed)
		sources = append(sources, Source{Name: p.name, URL: "http://" + p.name + "/search"})
	}
	return sources, &http.Client{Transport: t}
}

func (t memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h, ok := t[req.URL.Host]
	if !ok {
		return nil, errors.New("research: no simulated source at " + req.URL.Host)
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
