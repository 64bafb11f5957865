package fanoutdebug_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// served returns a server with p mounted under /debug/fanout, and one
// finished run on p (run 1) whose key "bad" failed.
func served(t *testing.T) (*httptest.Server, *fanoutdebug.Page) {
	t.Helper()
	p := fanoutdebug.New()
	_, _ = fanout.Run(t.Context(), []fanout.Task[int]{
		fanout.NewTask("good", func(context.Context) (int, error) { return 1, nil }),
		fanout.NewTask("bad", func(context.Context) (int, error) { return 0, errUpstream }),
	}, fanout.WithObserver(p.Observer("served")))
	mux := http.NewServeMux()
	mux.Handle("/debug/fanout/", http.StripPrefix("/debug/fanout", p))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, p
}

func TestHandler(t *testing.T) {
	srv, _ := served(t)
	tests := []struct {
		name     string
		give     string // method and path
		want     int
		wantType string
		wantBody string
	}{
		{"the overview is a page", "GET /debug/fanout/", 200, "text/html", `<script src="page.js"`},
		{"the bare prefix redirects to the page", "GET /debug/fanout", 200, "text/html", "<title>fanout</title>"},
		{"HEAD has headers and no body", "HEAD /debug/fanout/", 200, "text/html", ""},
		{"the script is served", "GET /debug/fanout/page.js", 200, "text/javascript", "textContent"},
		{"the style is served", "GET /debug/fanout/page.css", 200, "text/css", ".tiles"},
		{"a run's page is the page", "GET /debug/fanout/run?id=1", 200, "text/html", "<title>fanout</title>"},
		{"the overview's JSON", "GET /debug/fanout/api", 200, "application/json", `"name":"served"`},
		{"a run's JSON", "GET /debug/fanout/api/run?id=1", 200, "application/json", `"error":"upstream said no"`},
		{"a run ID that is not a number", "GET /debug/fanout/run?id=abc", 404, "text/plain", `bad run id "abc"`},
		{"a negative run ID", "GET /debug/fanout/run?id=-1", 404, "text/plain", `bad run id "-1"`},
		{"no run ID", "GET /debug/fanout/run", 404, "text/plain", `bad run id ""`},
		{"a run ID with markup", "GET /debug/fanout/run?id=%3Cb%3E", 404, "text/plain", `bad run id "<b>"`},
		{"an unknown run", "GET /debug/fanout/run?id=99", 404, "text/plain", "no run 99: it has not started"},
		{"an unknown run's JSON", "GET /debug/fanout/api/run?id=99", 404, "application/json", `{"error":"fanoutdebug: no run 99`},
		{"a bad run ID's JSON", "GET /debug/fanout/api/run?id=1.5", 404, "application/json", `bad run id \"1.5\"`},
		{"an overflowing run ID", "GET /debug/fanout/api/run?id=99999999999999999999", 404, "application/json", "bad run id"},
		{"an unknown path", "GET /debug/fanout/nope", 404, "text/plain", `no page "/nope"`},
		{"POST is refused", "POST /debug/fanout/", 405, "text/plain", "read-only"},
		{"PUT is refused", "PUT /debug/fanout/api", 405, "text/plain", "PUT is not allowed"},
		{"DELETE of a run is refused", "DELETE /debug/fanout/api/run?id=1", 405, "text/plain", "only GET and HEAD"},
		{"PATCH is refused", "PATCH /debug/fanout/run?id=1", 405, "text/plain", "read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path, _ := strings.Cut(tt.give, " ")
			req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
			require.NoError(t, err)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			assert.Equal(t, tt.want, resp.StatusCode, string(body))
			assert.Contains(t, resp.Header.Get("Content-Type"), tt.wantType)
			assert.Contains(t, string(body), tt.wantBody)
			assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
			if tt.want == 405 {
				assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
			}
			if method == "HEAD" {
				assert.Empty(t, body)
			}
		})
	}
}

func TestPageScriptsOnlyItsOwnFiles(t *testing.T) {
	srv, _ := served(t)
	resp, err := srv.Client().Get(srv.URL + "/debug/fanout/")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	csp := resp.Header.Get("Content-Security-Policy")
	assert.Contains(t, csp, "script-src 'self'")
	assert.Contains(t, csp, "default-src 'none'")
	assert.Contains(t, csp, "form-action 'none'")
}

func TestJSONHasTheSameDataAsThePage(t *testing.T) {
	srv, p := served(t)
	var s fanoutdebug.Snapshot
	getJSON(t, srv.URL+"/debug/fanout/api", &s)
	want := p.Snapshot()
	require.Len(t, s.Runs, 1)
	assert.Equal(t, want.Runs[0].ID, s.Runs[0].ID)
	assert.Equal(t, want.Runs[0].Failed, s.Runs[0].Failed)
	assert.Equal(t, 1, s.Runs[0].Failed)
	assert.Equal(t, int64(1000), s.RefreshMS)

	var d fanoutdebug.RunDetail
	getJSON(t, srv.URL+"/debug/fanout/api/run?id=1", &d)
	assert.Equal(t, 2, d.Tasks)
	require.Len(t, d.Failures, 1)
	assert.Equal(t, "bad", d.Failures[0].Key)
	assert.Equal(t, []fanoutdebug.KeyInFlight{}, d.Keys)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

func TestUnmountedPageSaysHowToMountIt(t *testing.T) {
	p := fanoutdebug.New()
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("GET", "/debug/fanout/", nil))
	assert.Equal(t, 404, rec.Code)
	assert.Contains(t, rec.Body.String(), "http.StripPrefix")
}
