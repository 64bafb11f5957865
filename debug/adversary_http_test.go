package fanoutdebug_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// payloads are strings a task key, an error, a name or a fleet's worker
// could carry to break out of the page into markup or script.
var payloads = []string{
	`<img src=x onerror=alert(1)>`,
	`</script><script>alert(2)</script>`,
	`"><svg onload=alert(3)>`,
	`'; alert(4); '`,
	`javascript:alert(5)`,
	`{{constructor.constructor('alert(6)')()}}`,
	"\u2028\u2029<!--",
}

// hostile returns a page mounted at the root of a server on 127.0.0.1,
// whose every string is a payload: a finished run (1) with keys, errors,
// retries and its name, a shared limit and a fleet.
func hostile(t *testing.T) (*httptest.Server, *fanoutdebug.Page) {
	t.Helper()
	p := fanoutdebug.New()
	tasks := make([]fanout.Task[int], len(payloads))
	for i, s := range payloads {
		tasks[i] = fanout.NewTask(s, func(context.Context) (int, error) { return 0, errors.New(s) })
	}
	_, _ = fanout.Run(t.Context(), tasks, fanout.WithObserver(p.Observer(payloads[0])),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: 1}))
	p.ShowLimiter(payloads[1], rate.NewLimiter(1, 1))
	p.ShowSemaphore(payloads[2], fanout.NewSemaphore(1))
	p.ShowFleet(payloads[3], func() fanoutdebug.Fleet {
		return fanoutdebug.Fleet{
			Workers: []fanoutdebug.FleetWorker{{Name: payloads[4]}},
			Batches: []fanoutdebug.FleetBatch{{ID: payloads[5]}},
		}
	})
	p.ShowFleet(payloads[6], func() fanoutdebug.Fleet { panic(payloads[0]) })
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv, p
}

type response struct {
	code   int
	header http.Header
	body   string
}

func do(t *testing.T, srv *httptest.Server, method, path string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{resp.StatusCode, resp.Header, string(body)}
}

func TestNoDataIsServedAsMarkup(t *testing.T) {
	srv, _ := hostile(t)
	t.Run("the HTML pages are the same static file, whatever the runs hold", func(t *testing.T) {
		index, err := fanoutdebugAsset("index.html")
		require.NoError(t, err)
		for _, path := range []string{"/", "/run?id=1"} {
			r := do(t, srv, "GET", path)
			require.Equal(t, 200, r.code, path)
			assert.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
			assert.Equal(t, index, r.body, "%s renders no data on the server", path)
		}
	})
	t.Run("the JSON escapes markup", func(t *testing.T) {
		for _, path := range []string{"/api", "/api/run?id=1"} {
			r := do(t, srv, "GET", path)
			require.Equal(t, 200, r.code, path)
			assert.Equal(t, "application/json", r.header.Get("Content-Type"))
			assert.NotContains(t, r.body, "<", "%s: a < in JSON is written \\u003c", path)
			assert.NotContains(t, r.body, ">", path)
			assert.NotContains(t, r.body, "\u2028", path)
		}
		body := do(t, srv, "GET", "/api").body
		for _, want := range []string{`\u003cimg src=x onerror=alert(1)\u003e`, `\u003c/script\u003e`, `javascript:alert(5)`} {
			assert.Contains(t, body, want, "the payload is there, as data")
		}
	})
	t.Run("errors that echo the request are plain text", func(t *testing.T) {
		for _, path := range []string{
			"/run?id=%3Cscript%3Ealert(1)%3C/script%3E",
			"/%3Cimg%20src=x%20onerror=alert(1)%3E",
			"/run?id=%22%3E%3Csvg%20onload=alert(1)%3E",
		} {
			r := do(t, srv, "GET", path)
			assert.Equal(t, 404, r.code, path)
			assert.Equal(t, "text/plain; charset=utf-8", r.header.Get("Content-Type"), path)
			assert.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"), path)
		}
		r := do(t, srv, "GET", "/api/run?id=%3Cscript%3E")
		assert.Equal(t, 404, r.code)
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		assert.NotContains(t, r.body, "<script>")
	})
}

// fanoutdebugAsset reads an embedded asset as the page serves it.
func fanoutdebugAsset(name string) (string, error) {
	rec := httptest.NewRecorder()
	path := "/" + name
	if name == "index.html" {
		path = "/"
	}
	fanoutdebug.New().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code != 200 {
		return "", fmt.Errorf("GET %s: %d", path, rec.Code)
	}
	return rec.Body.String(), nil
}

// The script's promise: every key, name and error is written with
// textContent, never as HTML. Any of these sinks would break it.
func TestScriptWritesNoHTML(t *testing.T) {
	js, err := fanoutdebugAsset("page.js")
	require.NoError(t, err)
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|` +
		`setAttribute\(\s*['"]on|createContextualFragment|DOMParser|srcdoc|\.html\(`)
	assert.Empty(t, sinks.FindAllString(js, -1))
	// setTimeout with a string is eval too.
	assert.NotRegexp(t, `setTimeout\(\s*['"]`, js)
	// Links are built from numeric run IDs only.
	calls := regexp.MustCompile(`\blink\(('[^,]+),`).FindAllStringSubmatch(js, -1)
	assert.Len(t, calls, 2)
	for _, m := range calls {
		assert.Regexp(t, `^'run\?id=' \+ \w+\.(id|parent)$`, m[1])
	}
	html, err := fanoutdebugAsset("index.html")
	require.NoError(t, err)
	assert.NotRegexp(t, `<script>|\son\w+=`, html, "no inline script or handler, so the CSP can forbid them")
}

// methods other than GET and HEAD, standard and made up.
var refused = []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FANOUT"}

func TestNothingChangesState(t *testing.T) {
	srv, p := hostile(t)
	before := p.Snapshot()
	paths := []string{"/", "/run?id=1", "/api", "/api/run?id=1", "/page.js", "/page.css", "/nope", "/api/run?id=x"}
	for _, m := range refused {
		for _, path := range paths {
			r := do(t, srv, m, path)
			assert.Equal(t, http.StatusMethodNotAllowed, r.code, "%s %s", m, path)
			assert.Equal(t, "GET, HEAD", r.header.Get("Allow"), "%s %s", m, path)
			assert.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"))
			assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
		}
	}
	after := p.Snapshot()
	assert.Equal(t, len(before.Runs), len(after.Runs))
	assert.Equal(t, before.Names, after.Names)
	assert.Equal(t, before.Limits, after.Limits)
	d, ok := p.Run(1)
	require.True(t, ok, "no method removed the run")
	assert.Equal(t, len(payloads), d.Failed)
}

func TestBadRunIDsAreNotFound(t *testing.T) {
	srv, _ := hostile(t)
	ids := []string{
		"", "0", "-1", "2", "+1", " 1", "1 ", "1.0", "1e0", "0x1", "1,2", "１",
		"18446744073709551615", "18446744073709551616", "-9223372036854775808",
		strings.Repeat("9", 10_000),
		"../1", "../../etc/passwd", "\x00", "1\x00", "1;2", "null", "NaN", "Infinity", "1\n", "<b>1</b>",
	}
	for _, id := range ids {
		for _, path := range []string{"/run?id=", "/api/run?id="} {
			r := do(t, srv, "GET", path+url.QueryEscape(id))
			assert.Equal(t, 404, r.code, "%s%q: %s", path, id, r.body)
			assert.Less(t, len(r.body), 1200, "%s%.20q…: the message clips the id", path, id)
			assert.Contains(t, r.body, "fanoutdebug: ", path+id)
			assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
		}
	}
	t.Run("a run's page at another path is not found", func(t *testing.T) {
		for _, path := range []string{"/run/", "/run/1", "/api/run/", "/api/run/1", "/api/", "/../api",
			"/run/../api", "//api", "/API", "/index.html", "/assets/page.js", "/page.js/", "/%2e%2e/api"} {
			r := do(t, srv, "GET", path)
			assert.Equal(t, 404, r.code, path)
		}
	})
	t.Run("the id parameter is the first one given", func(t *testing.T) {
		r := do(t, srv, "GET", "/api/run?id=99&id=1")
		assert.Equal(t, 404, r.code)
	})
}

func TestHeadersOfEveryAnswer(t *testing.T) {
	srv, _ := hostile(t)
	tests := []struct {
		give     string
		want     int
		wantType string
	}{
		{"GET /", 200, "text/html; charset=utf-8"},
		{"HEAD /", 200, "text/html; charset=utf-8"},
		{"GET /run?id=1", 200, "text/html; charset=utf-8"},
		{"GET /page.js", 200, "text/javascript; charset=utf-8"},
		{"GET /page.css", 200, "text/css; charset=utf-8"},
		{"GET /api", 200, "application/json"},
		{"HEAD /api", 200, "application/json"},
		{"GET /api/run?id=1", 200, "application/json"},
		{"GET /api/run?id=7", 404, "application/json"},
		{"GET /run?id=7", 404, "text/plain; charset=utf-8"},
		{"GET /nope", 404, "text/plain; charset=utf-8"},
		{"POST /api", 405, "text/plain; charset=utf-8"},
	}
	for _, tt := range tests {
		method, path, _ := strings.Cut(tt.give, " ")
		r := do(t, srv, method, path)
		assert.Equal(t, tt.want, r.code, tt.give)
		assert.Equal(t, tt.wantType, r.header.Get("Content-Type"), tt.give)
		assert.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"), tt.give)
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"), tt.give, "live data is never cached")
		assert.Contains(t, r.header.Get("Content-Security-Policy"), "script-src 'self'", tt.give)
		assert.Contains(t, r.header.Get("Content-Security-Policy"), "frame-ancestors 'none'", tt.give)
		assert.Empty(t, r.header.Get("Access-Control-Allow-Origin"), tt.give, "no other site reads it")
		assert.Empty(t, r.header.Get("Set-Cookie"), tt.give)
	}
}

// The script maps over every list the JSON has: a null one stops it
// drawing anything.
func TestJSONListsAreNeverNull(t *testing.T) {
	srv, p := hostile(t)
	p.ShowFleet("empty", func() fanoutdebug.Fleet { return fanoutdebug.Fleet{} })
	p.ShowFleet("nil report", nil)
	for _, path := range []string{"/api", "/api/run?id=1"} {
		r := do(t, srv, "GET", path)
		require.Equal(t, 200, r.code, path)
		assert.NotContains(t, r.body, "null", path)
	}
	empty := fanoutdebug.New()
	r := httptest.NewRecorder()
	empty.ServeHTTP(r, httptest.NewRequest("GET", "/api", nil))
	assert.NotContains(t, r.Body.String(), "null", "a page with no run")
}
