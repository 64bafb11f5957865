package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunPrintsTheReport(t *testing.T) {
	fast := [2]time.Duration{time.Millisecond, 5 * time.Millisecond}
	o := options{
		query: "hedged requests", seed: 1, rps: 100, burst: 4, attempts: 3,
		maxWait: time.Second, hedge: 50 * time.Millisecond, hedgeExtra: 0.5,
		taskTimeout: 2 * time.Second, timeout: 10 * time.Second,
		profiles: []profile{
			{name: "web", fast: fast},
			{name: "forum", fast: fast, refuse: []refusal{tooMany("Retry-After-Ms", "20")}},
			{name: "books", fast: fast, refuse: []refusal{tooMany("Retry-After", "3600")}, refuseAlways: true},
		},
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, o); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"3 simulated sources on 127.0.0.1",
		"SOURCE  LATENCY  ATTEMPTS  HEDGES  LIMITER WAIT  OUTCOME",
		"forum    attempt 1: HTTP 429 asking 20ms -> retry in 2", // 20ms and a spread of up to 4ms
		"FAILED: HTTP 429 asking 1h0m0s > max wait 1s: not retried",
		`merged answer for "hedged requests" (2 of 3 sources`,
		"1. hedged requests:",
		"retries after 429, waiting as the server asked: 1 (forum 2",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParseSource(t *testing.T) {
	tests := []struct {
		give    string
		want    Source
		wantErr bool
	}{
		{give: "wiki=https://en.wikipedia.org/w/index.php?search={q}",
			want: Source{Name: "wiki", URL: "https://en.wikipedia.org/w/index.php?search={q}"}},
		{give: "local=http://127.0.0.1:8080/search", want: Source{Name: "local", URL: "http://127.0.0.1:8080/search"}},
		{give: "https://example.org", wantErr: true},
		{give: "=https://example.org", wantErr: true},
		{give: "ftp=ftp://example.org", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseSource(tt.give)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseSource(%q) = %+v, %v; want %+v, error %v", tt.give, got, err, tt.want, tt.wantErr)
		}
	}
}
