package fanoutopenai_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutopenai "github.com/gofanout/fanout/openai"
)

// rawAPI is a server on 127.0.0.1 that answers every request with answer,
// counting them: for bodies and headers the fake API would never send.
type rawAPI struct {
	srv  *httptest.Server
	hits atomic.Int32
}

func newRawAPI(t *testing.T, answer http.HandlerFunc) *rawAPI {
	a := &rawAPI{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		answer(w, r)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *rawAPI) client() openai.Client {
	return openai.NewClient(option.WithBaseURL(a.srv.URL+"/v1/"), option.WithAPIKey("test"),
		option.WithHTTPClient(a.srv.Client()))
}

// answer writes status with the headers and body given.
func answer(status int, contentType, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		_, _ = fmt.Fprint(w, body)
	}
}

// cutOff writes status and the start of body, announcing more, then
// drops the connection: a reset mid-body.
func cutOff(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "4096")
		w.WriteHeader(status)
		_, _ = fmt.Fprint(w, body)
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
}

func jsonError(status int, code, typ string, header ...string) http.HandlerFunc {
	var c any
	if code != "" {
		c = strconv.Quote(code)
	} else {
		c = "null"
	}
	body := fmt.Sprintf(`{"error": {"message": "what went wrong", "type": %q, "code": %s, "param": null}}`, typ, c)
	return answer(status, "application/json", body, header...)
}

// TestAdversaryEveryStatusAndBody runs Chat under fanout.Run with three
// attempts against every error the API, or a proxy in front of it, can
// answer: the server must see one request for what another try cannot
// fix and three for the rest, the key's error must carry the status, and
// the limiter must be settled at 0 for a rejected call but keep the
// estimate of one cut before an answer.
func TestAdversaryEveryStatusAndBody(t *testing.T) {
	const html = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
	tests := []struct {
		name        string
		give        http.HandlerFunc
		wantHits    int
		wantStatus  int // of the *openai.Error in the key's error; 0: none
		wantCharged int // left on the ledger: 0 when settled as rejected
	}{
		{"400 invalid_request_error", jsonError(400, "invalid_value", "invalid_request_error"), 1, 400, 0},
		{"401 invalid_api_key", jsonError(401, "invalid_api_key", "invalid_request_error"), 1, 401, 0},
		{"403 unsupported_country_region_territory", jsonError(403, "unsupported_country_region_territory", "request_forbidden"), 1, 403, 0},
		{"404 model_not_found", jsonError(404, "model_not_found", "invalid_request_error"), 1, 404, 0},
		{"409 conflict", jsonError(409, "", "invalid_request_error"), 3, 409, 0},
		{"422 unprocessable", jsonError(422, "", "invalid_request_error"), 1, 422, 0},
		{"429 rate_limit_exceeded", jsonError(429, "rate_limit_exceeded", "requests", "Retry-After-Ms", "1"), 3, 429, 0},
		{"429 insufficient_quota", jsonError(429, "insufficient_quota", "insufficient_quota", "Retry-After", "1"), 1, 429, 0},
		{"500 server_error", jsonError(500, "", "server_error"), 3, 500, 0},
		{"502 as a proxy's HTML page", answer(502, "text/html", html), 3, 502, 0},
		{"503 with an empty body", answer(503, "", ""), 3, 503, 0},
		{"400 with malformed JSON", answer(400, "application/json", `{"error": {"message": "bad`), 1, 400, 0},
		{"401 with a string for the error", answer(401, "application/json", `{"error": "Unauthorized"}`), 1, 401, 0},
		{"403 as a proxy's HTML page", answer(403, "text/html", "<html><body>Forbidden</body></html>"), 1, 403, 0},
		{"400 cut mid-body", cutOff(400, `{"error": {"message": "`), 1, 400, 0},
		{"503 cut mid-body", cutOff(503, `{"error": {"message": "`), 3, 503, 0},
		{"a 400 saying x-should-retry: true, with a string error", answer(400, "application/json", `{"error": "busy"}`, "X-Should-Retry", "true"), 3, 400, 0},
		{"a 503 saying x-should-retry: false, cut mid-body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Should-Retry", "false")
			cutOff(503, "{")(w, r)
		}, 1, 503, 0},
		{"200 cut mid-body is a broken connection: retried, estimate kept", cutOff(200, `{"id": "chatcmpl-1", "choices": [`), 3, 0, 3 * 104},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newRawAPI(t, tt.give)
			l := &ledger{}
			rs, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "a")},
				fanout.WithRateLimit(l),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond, Multiplier: 1}))
			require.Error(t, err)
			r, _ := rs.Get("a")
			assert.Equal(t, tt.wantHits, int(api.hits.Load()), "requests the server saw: %v", r.Err)
			assert.Equal(t, tt.wantHits, r.Attempts)
			assert.Equal(t, tt.wantHits == 3, fanout.Retryable(r.Err), "fanout.Retryable(%v)", r.Err)
			var sdk *openai.Error
			if tt.wantStatus == 0 {
				assert.False(t, errors.As(r.Err, &sdk), "no API error in %v", r.Err)
			} else {
				require.ErrorAs(t, r.Err, &sdk)
				assert.Equal(t, tt.wantStatus, sdk.StatusCode)
				var e *fanoutopenai.APIError
				require.ErrorAs(t, r.Err, &e)
				assert.Equal(t, tt.wantStatus, e.Status)
				assert.Contains(t, r.Err.Error(), "openai: "+strconv.Itoa(tt.wantStatus))
			}
			assert.Equal(t, tt.wantCharged, l.total(), "tokens left charged")
		})
	}
}

// sdkError is the *openai.Error the SDK makes of an error response with
// these headers, given as name, value pairs.
func sdkError(status int, code string, header ...string) *openai.Error {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return &openai.Error{StatusCode: status, Code: code,
		Response: &http.Response{StatusCode: status, Header: h}}
}

// TestAdversaryClassifyHeaders feeds Classify garbage and conflicting
// headers: the verdict follows the documented order, and a wait is never
// negative, never garbage, and comes from the first header present.
func TestAdversaryClassifyHeaders(t *testing.T) {
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	spentRequests := func(reset string) []string {
		return []string{"X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", reset,
			"X-Ratelimit-Remaining-Tokens", "5000", "X-Ratelimit-Reset-Tokens", "2s"}
	}
	tests := []struct {
		name      string
		give      *openai.Error
		wantRetry bool
		wantDelay time.Duration
	}{
		{"retry-after-ms wins over Retry-After", sdkError(429, "rate_limit_exceeded", "Retry-After-Ms", "250", "Retry-After", "7"), true, 250 * time.Millisecond},
		{"a garbage retry-after-ms gives way to Retry-After", sdkError(429, "", "Retry-After-Ms", "soon", "Retry-After", "2"), true, 2 * time.Second},
		{"Retry-After with a fraction", sdkError(503, "", "Retry-After", "1.5"), true, 1500 * time.Millisecond},
		{"a negative Retry-After is no wait", sdkError(503, "", "Retry-After", "-30"), true, 0},
		{"a garbage Retry-After is no wait", sdkError(503, "", "Retry-After", "tomorrow-ish"), true, 0},
		{"a Retry-After date in the past is no wait", sdkError(503, "", "Retry-After", past), true, 0},
		{"a 429's Retry-After in the past gives way to the reset", sdkError(429, "", append(spentRequests("1m30.5s"), "Retry-After", past)...), true, 90500 * time.Millisecond},
		{"a huge Retry-After stays huge, not negative", sdkError(503, "", "Retry-After", "99999999999999"), true, time.Duration(1<<63 - 1)},
		{"reset 1m30.5s of the spent requests", sdkError(429, "", spentRequests("1m30.5s")...), true, 90500 * time.Millisecond},
		{"reset 6ms of the spent requests", sdkError(429, "", spentRequests("6ms")...), true, 6 * time.Millisecond},
		{"reset 0s of the spent requests is no wait", sdkError(429, "", "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "0s"), true, 0},
		{"a garbage reset is no wait", sdkError(429, "", "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "in a bit"), true, 0},
		{"a negative reset is no wait", sdkError(429, "", "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "-5s"), true, 0},
		{"a garbage remaining falls to the tokens' reset", sdkError(429, "", "X-Ratelimit-Remaining-Requests", "lots", "X-Ratelimit-Reset-Requests", "1s",
			"X-Ratelimit-Remaining-Tokens", "0", "X-Ratelimit-Reset-Tokens", "3s"), true, 3 * time.Second},
		{"x-should-retry: true on a 400 waits its Retry-After", sdkError(400, "", "X-Should-Retry", "true", "Retry-After", "1"), true, time.Second},
		{"x-should-retry in capitals and spaces", sdkError(400, "", "X-Should-Retry", " TRUE "), true, 0},
		{"a garbage x-should-retry leaves the status to decide", sdkError(400, "", "X-Should-Retry", "maybe"), false, 0},
		{"x-should-retry: false on a 503 with a wait", sdkError(503, "", "X-Should-Retry", "false", "Retry-After-Ms", "100"), false, 0},
		{"x-should-retry: true overrules insufficient_quota", sdkError(429, "insufficient_quota", "X-Should-Retry", "true"), true, 0},
		{"insufficient_quota ignores its Retry-After", sdkError(429, "insufficient_quota", "Retry-After", "20"), false, 0},
		{"a reset on a 500 is no wait", sdkError(500, "", spentRequests("1s")...), true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fanoutopenai.Classify(tt.give)
			var e *fanoutopenai.APIError
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tt.wantRetry, e.Retryable())
			assert.Equal(t, tt.wantRetry, fanout.Retryable(err))
			var perm *backoff.PermanentError
			assert.Equal(t, !tt.wantRetry, errors.As(err, &perm))
			assert.Equal(t, tt.wantDelay, e.RetryAfter())
		})
	}
}

// TestAdversaryLimits attacks Limits' promises in a bubble: garbage and
// odd headers, pauses, a request larger than the whole budget, contexts
// that ended or cannot wait long enough, settlements either way, and a
// response that arrives after its window has passed.
func TestAdversaryLimits(t *testing.T) {
	t.Run("a request larger than the whole budget fails at once, even during a pause", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			l.Pause(10 * time.Second)
			start := time.Now()
			err := l.WaitN(context.Background(), 1001)
			assert.ErrorContains(t, err, "more than the server's whole budget of 1000 tokens")
			assert.Zero(t, time.Since(start))
		})
	})
	t.Run("a context that has ended takes nothing", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			cause := errors.New("run over")
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(cause)
			for range 5 {
				assert.ErrorIs(t, l.WaitN(ctx, 500), cause)
			}
			assert.Zero(t, waited(t, l, 1000), "nothing was taken by the ended context")
		})
	})
	t.Run("a wait past the deadline fails at once, a wait within it waits", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 0, time.Second))
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			assert.ErrorContains(t, l.WaitN(ctx, 1), "past the context deadline")
			assert.Zero(t, time.Since(start))
			ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel2()
			assert.NoError(t, l.WaitN(ctx2, 1))
			assert.Equal(t, time.Second, time.Since(start))
		})
	})
	t.Run("cancelling a waiter returns its cause at once and frees no one else", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 0, time.Second))
			cause := errors.New("gave up")
			ctx, cancel := context.WithCancelCause(context.Background())
			time.AfterFunc(100*time.Millisecond, func() { cancel(cause) })
			start := time.Now()
			assert.ErrorIs(t, l.WaitN(ctx, 1), cause)
			assert.Equal(t, 100*time.Millisecond, time.Since(start))
			assert.Equal(t, 900*time.Millisecond, waited(t, l, 1))
		})
	})
	t.Run("a later, shorter or negative Pause never shortens one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutopenai.Limits
			l.Pause(time.Second)
			l.Pause(100 * time.Millisecond)
			l.Pause(-time.Hour)
			l.Pause(0)
			assert.Equal(t, time.Second, waited(t, &l, 1))
			assert.Zero(t, waited(t, &l, 1), "the pause is over")
		})
	})
	t.Run("a Pause holds every waiter, before the server has spoken too", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutopenai.Limits
			l.Pause(300 * time.Millisecond)
			var wg sync.WaitGroup
			for range 10 {
				wg.Go(func() { assert.Equal(t, 300*time.Millisecond, waited(t, &l, 50)) })
			}
			wg.Wait()
		})
	})
	t.Run("the first wave goes through, then the server's word holds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutopenai.Limits
			for range 50 {
				assert.Zero(t, waited(t, &l, 100))
			}
			h := tokenHeaders(10_000, 5000, 2*time.Second)
			h.Set("X-Ratelimit-Limit-Requests", "1000")
			h.Set("X-Ratelimit-Remaining-Requests", "950") // all 50 arrived
			l.Observe(h)
			assert.Zero(t, waited(t, &l, 5000))
			assert.Equal(t, 2*time.Second, waited(t, &l, 1))
		})
	})
	t.Run("garbage headers are ignored", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			for _, reset := range []string{"soon", "-1s", "", "1e12"} {
				h := tokenHeaders(1000, 0, time.Second)
				h.Set("X-Ratelimit-Reset-Tokens", reset)
				h.Set("X-Ratelimit-Remaining-Requests", "many")
				l.Observe(h)
			}
			h := tokenHeaders(1000, 0, time.Second)
			h.Set("X-Ratelimit-Limit-Tokens", "-4")
			l.Observe(h)
			l.Observe(nil)
			assert.Zero(t, waited(t, l, 5000), "Limits still knows nothing")
		})
	})
	t.Run("a reset of 1m30.5s is waited in full", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			h := tokenHeaders(1000, 0, 0)
			h.Set("X-Ratelimit-Reset-Tokens", "1m30.5s")
			l.Observe(h)
			assert.Equal(t, 90500*time.Millisecond, waited(t, l, 10))
		})
	})
	t.Run("a spent budget with a reset of 0s holds nothing back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			h := tokenHeaders(1000, 0, 0)
			h.Set("X-Ratelimit-Reset-Tokens", "0s")
			l.Observe(h)
			assert.Zero(t, waited(t, l, 10))
		})
	})
	t.Run("a response written before a reset and read after it does not spend the new window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			assert.Zero(t, waited(t, l, 1000))
			time.Sleep(1100 * time.Millisecond)
			l.Observe(tokenHeaders(1000, 0, 10*time.Millisecond)) // late: it spoke of the window before
			assert.Zero(t, waited(t, l, 1000), "the new window is whole")
			assert.Equal(t, 900*time.Millisecond, waited(t, l, 1), "and now spent")
		})
	})
	t.Run("Settle takes what a call used beyond its charge, and gives nothing back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			assert.Zero(t, waited(t, l, 100))
			l.Settle(100, 0) // used less: no refund
			assert.Zero(t, waited(t, l, 100))
			l.Settle(100, 700) // used 600 more
			assert.Zero(t, waited(t, l, 200), "1000 - 100 - 100 - 600 left")
			assert.Equal(t, time.Second, waited(t, l, 1))
		})
	})
	t.Run("concurrent waiters never take more than the budget in a window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			var wg sync.WaitGroup
			var now, later atomic.Int32
			for range 40 {
				wg.Go(func() {
					if waited(t, l, 100) == 0 {
						now.Add(1)
					} else {
						later.Add(1)
					}
				})
			}
			wg.Wait()
			assert.Equal(t, int32(10), now.Load())
			assert.Equal(t, int32(30), later.Load())
		})
	})
}

// proxy is a server on 127.0.0.1 in front of the fake API: route answers
// the requests it wants to, by returning true, and the fake the rest.
func proxy(t *testing.T, api *fakeAPI, route func(w http.ResponseWriter, r *http.Request) bool) openai.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !route(w, r) {
			api.srv.Config.Handler.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey("test"),
		option.WithHTTPClient(srv.Client()))
}

// rewriteOutput rewrites the lines of every result file the fake serves.
func rewriteOutput(t *testing.T, api *fakeAPI, rewrite func(lines []string) []string) openai.Client {
	return proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/content") {
			return false
		}
		rec := httptest.NewRecorder()
		api.srv.Config.Handler.ServeHTTP(rec, r)
		lines := strings.Split(strings.TrimSuffix(rec.Body.String(), "\n"), "\n")
		w.WriteHeader(rec.Code)
		_, _ = fmt.Fprint(w, strings.Join(rewrite(lines), "\n")+"\n")
		return true
	})
}

// TestAdversaryRunBatchResultFiles serves result files that a careless or
// broken API could: garbage lines, lines without their keys, duplicates,
// lines of keys never sent, error lines of every kind.
func TestAdversaryRunBatchResultFiles(t *testing.T) {
	t.Run("a garbage line costs no other key its answer", func(t *testing.T) {
		api := newFakeAPI(t)
		client := rewriteOutput(t, api, func(lines []string) []string {
			for i, l := range lines {
				if strings.Contains(l, `"custom_id":"c"`) {
					lines[i] = l[:len(l)/2] // c's line, cut
				}
			}
			return append([]string{lines[0], "<html>oops</html>", `["not", "a", "line"]`, `{"custom_id": 7}`}, lines[1:]...)
		})
		rs, err := fanoutopenai.RunBatch(context.Background(), client, batchRequests("a", "b", "c", "d"), fastPolls)
		require.Error(t, err)
		assert.Equal(t, 3, rs.Succeeded())
		c, _ := rs.Get("c")
		assert.ErrorIs(t, c.Err, fanoutopenai.ErrNoResult)
		assert.ErrorContains(t, c.Err, "4 lines of its result files did not parse")
	})
	t.Run("a line without its status code is no answer", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchDrop["gone"] = true })
		client := rewriteOutput(t, api, func(lines []string) []string {
			return append(lines, `{"custom_id": "gone", "response": {"body": {"error": {"message": "x", "type": "server_error"}}}}`)
		})
		rs, err := fanoutopenai.RunBatch(context.Background(), client, batchRequests("a", "gone"), fastPolls)
		require.Error(t, err)
		assert.Equal(t, 1, rs.Succeeded())
		gone, _ := rs.Get("gone")
		assert.Nil(t, gone.Value)
		assert.ErrorIs(t, gone.Err, fanoutopenai.ErrNoResult)
	})
	t.Run("a key's first line counts, and lines of keys never sent are ignored", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchFail["b"] = badRequest() })
		client := rewriteOutput(t, api, func(lines []string) []string {
			out := []string{`{"custom_id": "stranger", "response": {"status_code": 200, "body": {"id": "x"}}}`}
			out = append(out, lines...)
			return append(out, lines...) // every line twice
		})
		rs, err := fanoutopenai.RunBatch(context.Background(), client, batchRequests("a", "b"), fastPolls)
		require.Error(t, err)
		assert.Equal(t, 2, rs.Len())
		a, _ := rs.Get("a")
		assert.Equal(t, "batch answer to a", a.Value.Choices[0].Message.Content)
		b, _ := rs.Get("b")
		assert.EqualError(t, b.Err, "openai: 400 invalid_value: Invalid value for 'temperature'.")
		_, ok := rs.Get("stranger")
		assert.False(t, ok)
	})
	t.Run("an error file line of each kind", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() {
			api.batchFail["quota"] = noQuota()
			api.batchFail["rate"] = reply{status: 429, code: "rate_limit_exceeded", typ: "requests", message: "Slow down."}
			api.batchFail["auth"] = reply{status: 401, code: "invalid_api_key", typ: "invalid_request_error", message: "Bad key."}
			for _, k := range []string{"dropped", "odd", "bare", "badbody"} {
				api.batchDrop[k] = true // the fake writes no line: the proxy does, or none
			}
		})
		client := rewriteOutput(t, api, func(lines []string) []string {
			return append(lines, `{"custom_id": "odd", "error": {"code": "server_error", "message": "Something broke."}}`,
				`{"custom_id": "bare"}`, `{"custom_id": "badbody", "response": {"status_code": 200, "body": "not a completion"}}`)
		})
		rs, err := fanoutopenai.RunBatch(context.Background(), client,
			batchRequests("ok", "quota", "rate", "auth", "dropped", "odd", "bare", "badbody"), fastPolls)
		require.Error(t, err)
		get := func(k string) fanout.Result[*openai.ChatCompletion] { r, _ := rs.Get(k); return r }
		assert.NoError(t, get("ok").Err)
		assert.False(t, fanout.Retryable(get("quota").Err))
		assert.True(t, fanout.Retryable(get("rate").Err))
		assert.False(t, fanout.Retryable(get("auth").Err))
		var e *fanoutopenai.APIError
		require.ErrorAs(t, get("auth").Err, &e)
		assert.Equal(t, 401, e.Status)
		assert.Equal(t, "invalid_api_key", e.Code)
		assert.ErrorIs(t, get("dropped").Err, fanoutopenai.ErrNoResult)
		assert.ErrorContains(t, get("odd").Err, "server_error: Something broke.")
		assert.ErrorIs(t, get("bare").Err, fanoutopenai.ErrNoResult)
		assert.ErrorContains(t, get("badbody").Err, `the body of "badbody"`)
		for _, k := range []string{"ok", "quota", "rate", "auth"} {
			assert.Equal(t, 1, get(k).Attempts, k)
		}
	})
	t.Run("a result file that cannot be read fails the keys it holds, naming the batch", func(t *testing.T) {
		api := newFakeAPI(t)
		client := proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasSuffix(r.URL.Path, "/content") {
				return false
			}
			jsonError(404, "", "invalid_request_error")(w, r)
			return true
		})
		rs, err := fanoutopenai.RunBatch(context.Background(), client, batchRequests("a"), fastPolls)
		require.Error(t, err)
		a, _ := rs.Get("a")
		assert.ErrorContains(t, a.Err, "openai: batch batch-2 results: 404")
		assert.False(t, fanout.Retryable(a.Err))
	})
	t.Run("an expired batch that ran nothing fails every key with ErrBatchExpired", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.outcome = openai.BatchStatusExpired })
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests("a"), fastPolls)
		require.ErrorIs(t, err, fanoutopenai.ErrBatchExpired)
		a, _ := rs.Get("a")
		assert.ErrorIs(t, a.Err, fanoutopenai.ErrBatchExpired)
		assert.NotErrorIs(t, a.Err, fanoutopenai.ErrBatchCancelled)
	})
}

// TestAdversaryRunBatchBadInput gives RunBatch what it must refuse before
// any request.
func TestAdversaryRunBatchBadInput(t *testing.T) {
	tests := []struct {
		name   string
		client func(api *fakeAPI) openai.Client
		opts   []fanoutopenai.Option
		want   string
	}{
		{"a zero client", func(*fakeAPI) openai.Client { return openai.Client{} }, nil, "openai.NewClient"},
		{"a nil option", nil, []fanoutopenai.Option{nil}, "nil Option"},
		{"a negative price", nil, []fanoutopenai.Option{fanoutopenai.WithPrices(fanoutopenai.Prices{Output: -1})}, "must not be negative"},
		{"a file larger than the API takes", nil, []fanoutopenai.Option{fanoutopenai.WithBatchLimits(10, fanoutopenai.MaxBatchBytes+1)}, "WithBatchLimits"},
		{"more requests per file than the API takes", nil, []fanoutopenai.Option{fanoutopenai.WithBatchLimits(fanoutopenai.MaxBatchRequests+1, 10)}, "WithBatchLimits"},
		{"a zero poll interval", nil, []fanoutopenai.Option{fanoutopenai.WithPollInterval(0, time.Second)}, "WithPollInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			client := api.client()
			if tt.client != nil {
				client = tt.client(api)
			}
			rs, err := fanoutopenai.RunBatch(context.Background(), client, batchRequests("a"), tt.opts...)
			require.Error(t, err)
			assert.Nil(t, rs)
			assert.True(t, strings.HasPrefix(err.Error(), "openai: "), err.Error())
			assert.Contains(t, err.Error(), tt.want)
			api.with(func() { assert.Zero(t, api.nextID, "nothing uploaded") })
		})
	}
	t.Run("Chat and Response refuse a nil option where the task is built", func(t *testing.T) {
		assert.PanicsWithError(t, "openai: nil Option", func() { fanoutopenai.Chat(openai.Client{}, params("a"), nil) })
		assert.PanicsWithError(t, "openai: nil Option", func() {
			fanoutopenai.Response(openai.Client{}, responses.ResponseNewParams{}, nil)
		})
	})
}

// hang answers nothing until the client gives up, then closes closed.
// It reads the body first: only then does the server watch the
// connection, and end r's context when the client closes it.
func hang(_ http.ResponseWriter, r *http.Request, closed chan struct{}) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
	close(closed)
}

// TestAdversaryCancellation cancels at every moment of a call and of a
// batch: nothing is sent for a context that has ended, the request in
// flight is closed, the keys report the cause, and a batch that exists is
// cancelled on the server.
func TestAdversaryCancellation(t *testing.T) {
	cause := errors.New("the user left")
	t.Run("Chat with a context ended before the call sends nothing", func(t *testing.T) {
		api := newFakeAPI(t)
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		_, err := fanoutopenai.Chat(api.client(), params("a"))(ctx)
		require.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, api.stats().total)
	})
	t.Run("Chat cancelled mid-request closes it and keeps the estimate", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("a", hold)
		l := &ledger{}
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			<-api.arrived("a")
			cancel(cause)
		}()
		start := time.Now()
		rs, err := fanout.Run(ctx, []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "a")}, fanout.WithRateLimit(l))
		require.Error(t, err)
		assert.Less(t, time.Since(start), 5*time.Second)
		r, _ := rs.Get("a")
		assert.ErrorIs(t, r.Err, cause)
		requireClosed(t, api, "a")
		assert.Equal(t, 104, l.total(), "cut before an answer: the estimate stands")
	})
	t.Run("RunBatch with a context ended before the call uploads nothing", func(t *testing.T) {
		api := newFakeAPI(t)
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		rs, err := fanoutopenai.RunBatch(ctx, api.client(), batchRequests("a", "b"), fastPolls)
		require.ErrorIs(t, err, cause)
		for _, r := range rs.All() {
			assert.ErrorIs(t, r.Err, cause)
		}
		api.with(func() { assert.Zero(t, api.nextID) })
	})
	t.Run("RunBatch cancelled during the upload closes it and creates no batch", func(t *testing.T) {
		api := newFakeAPI(t)
		closed := make(chan struct{})
		ctx, cancel := context.WithCancelCause(context.Background())
		client := proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v1/files" {
				return false
			}
			time.AfterFunc(20*time.Millisecond, func() { cancel(cause) })
			hang(w, r, closed)
			return true
		})
		rs, err := fanoutopenai.RunBatch(ctx, client, batchRequests("a"), fastPolls)
		require.ErrorIs(t, err, cause)
		a, _ := rs.Get("a")
		assert.ErrorIs(t, a.Err, cause)
		<-closed
		api.with(func() { assert.Empty(t, api.batches) })
	})
	t.Run("RunBatch cancelled while the batch is being created still cancels the batch", func(t *testing.T) {
		api := newFakeAPI(t)
		ctx, cancel := context.WithCancelCause(context.Background())
		client := proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/batches" {
				cancel(cause)
				time.Sleep(50 * time.Millisecond)
			}
			return false
		})
		rs, err := fanoutopenai.RunBatch(ctx, client, batchRequests("a"), fastPolls)
		require.ErrorIs(t, err, fanoutopenai.ErrBatchCancelled)
		a, _ := rs.Get("a")
		assert.ErrorIs(t, a.Err, fanoutopenai.ErrBatchCancelled)
		assert.ErrorIs(t, a.Err, cause)
		api.with(func() {
			assert.Len(t, api.batches, 1)
			assert.Len(t, api.cancels, 1)
		})
	})
	t.Run("RunBatch cancelled mid-poll closes the poll and cancels the batch", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchPolls = 1 << 30 })
		closed := make(chan struct{})
		var polls atomic.Int32
		ctx, cancel := context.WithCancelCause(context.Background())
		client := proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/batches/") || polls.Add(1) < 3 {
				return false
			}
			if polls.Load() == 3 {
				time.AfterFunc(20*time.Millisecond, func() { cancel(cause) })
				hang(w, r, closed)
				return true
			}
			return false
		})
		start := time.Now()
		rs, err := fanoutopenai.RunBatch(ctx, client, batchRequests("a"), fastPolls)
		assert.Less(t, time.Since(start), 5*time.Second)
		require.ErrorIs(t, err, cause)
		a, _ := rs.Get("a")
		assert.ErrorIs(t, a.Err, fanoutopenai.ErrBatchCancelled)
		<-closed
		api.with(func() { assert.Len(t, api.cancels, 1) })
	})
	t.Run("RunBatch cancelled while reading the results closes the download", func(t *testing.T) {
		api := newFakeAPI(t)
		closed := make(chan struct{})
		ctx, cancel := context.WithCancelCause(context.Background())
		client := proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasSuffix(r.URL.Path, "/content") {
				return false
			}
			time.AfterFunc(20*time.Millisecond, func() { cancel(cause) })
			hang(w, r, closed)
			return true
		})
		rs, err := fanoutopenai.RunBatch(ctx, client, batchRequests("a"), fastPolls)
		require.ErrorIs(t, err, cause)
		a, _ := rs.Get("a")
		assert.ErrorIs(t, a.Err, cause)
		<-closed
	})
}

// TestAdversaryRunBatchPollErrors answers the polls of a batch with errors
// the SDK cannot parse: one another try cannot fix ends the wait at once,
// and one it can is tried again.
func TestAdversaryRunBatchPollErrors(t *testing.T) {
	t.Run("a 401 whose body is a string ends the wait", func(t *testing.T) {
		api := newFakeAPI(t)
		client := proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/batches/") {
				return false
			}
			answer(401, "application/json", `{"error": "Unauthorized"}`)(w, r)
			return true
		})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		rs, err := fanoutopenai.RunBatch(ctx, client, batchRequests("a"), fastPolls)
		require.Error(t, err)
		a, _ := rs.Get("a")
		assert.NotErrorIs(t, a.Err, fanoutopenai.ErrBatchCancelled, "the wait ended on the 401, not on the deadline")
		assert.ErrorContains(t, a.Err, "status: 401")
		assert.False(t, fanout.Retryable(a.Err))
	})
	t.Run("a proxy's 502 page and a cut 503 are polled through", func(t *testing.T) {
		api := newFakeAPI(t)
		var polls atomic.Int32
		client := proxy(t, api, func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/batches/") {
				return false
			}
			switch polls.Add(1) {
			case 1:
				answer(502, "text/html", "<html>Bad Gateway</html>")(w, r)
			case 2:
				cutOff(503, "{")(w, r)
			default:
				return false
			}
			return true
		})
		rs, err := fanoutopenai.RunBatch(context.Background(), client, batchRequests("a"), fastPolls)
		require.NoError(t, err)
		assert.Equal(t, 1, rs.Succeeded())
	})
}

// TestAdversaryLimitsUnderRuns shares one Limits between runs against the
// fake's fixed-window budget, on real time with short windows.
func TestAdversaryLimitsUnderRuns(t *testing.T) {
	t.Run("two runs at once sharing a Limits never meet a 429", func(t *testing.T) {
		api := newFakeAPI(t)
		api.setBudget(1<<30, 8, 300*time.Millisecond)
		limits := fanoutopenai.NewLimits()
		client := api.client()
		runOne := func(prefix string) (*fanout.Results[*openai.ChatCompletion], error) {
			tasks := make([]fanout.Task[*openai.ChatCompletion], 12)
			for i := range tasks {
				tasks[i] = chatTask(client, fmt.Sprintf("%s%d", prefix, i), fanoutopenai.WithLimits(limits))
			}
			return fanout.Run(context.Background(), tasks, fanout.WithLimit(4), fanout.WithRateLimit(limits),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}))
		}
		var wg sync.WaitGroup
		var failed atomic.Int32
		for _, p := range []string{"x", "y"} {
			wg.Go(func() {
				if _, err := runOne(p); err != nil {
					failed.Add(1)
					t.Log(err)
				}
			})
		}
		wg.Wait()
		assert.Zero(t, failed.Load())
		s := api.stats()
		assert.Zero(t, s.tooMany, "429s")
		assert.Equal(t, 24, s.total, "one request per key")
	})
	t.Run("a task larger than the whole budget fails without a request", func(t *testing.T) {
		api := newFakeAPI(t)
		api.setBudget(1000, 1000, time.Minute)
		limits := fanoutopenai.NewLimits()
		client := api.client()
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(client, "first", fanoutopenai.WithLimits(limits))},
			fanout.WithRateLimit(limits))
		require.NoError(t, err)
		huge := chatTask(client, "huge", fanoutopenai.WithLimits(limits))
		huge.Tokens = 5000
		start := time.Now()
		rs, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{huge}, fanout.WithRateLimit(limits),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}))
		require.Error(t, err)
		assert.Less(t, time.Since(start), time.Second)
		r, _ := rs.Get("huge")
		assert.ErrorContains(t, r.Err, "more than the server's whole budget of 1000 tokens")
		assert.Zero(t, api.stats().hits["huge"])
	})
	t.Run("a call that used more than its estimate is settled up", func(t *testing.T) {
		api := newFakeAPI(t)
		l := &ledger{}
		task := chatTask(api.client(), "a")
		task.Tokens = 10 // the call uses 64
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{task}, fanout.WithRateLimit(l))
		require.NoError(t, err)
		assert.Equal(t, 64, l.total())
	})
}
