package fanoutanthropic_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// The tests of this file attack the package's promises with what a real
// API, a proxy in front of it, or a caller can throw at them: every error
// status and body, garbage headers, connections cut mid-body, contexts
// ending at every moment, results files with holes and garbage.

// rawAPI is a server on 127.0.0.1 that answers every request with handle,
// counting the hits, and the real SDK pointed at it.
type rawAPI struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newRawAPI(t *testing.T, handle http.HandlerFunc) *rawAPI {
	t.Helper()
	a := &rawAPI{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		handle(w, r)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *rawAPI) client() anthropic.Client {
	return anthropic.NewClient(option.WithBaseURL(a.srv.URL), option.WithAPIKey("test"),
		option.WithHTTPClient(a.srv.Client()))
}

// answer writes status, headers given as pairs, and body.
func answer(status int, body string, kv ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := 0; i+1 < len(kv); i += 2 {
			w.Header().Set(kv[i], kv[i+1])
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// cutBody answers status and headers, announces a body longer than it
// sends, and closes the connection part-way through it.
func cutBody(status int, kv ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := 0; i+1 < len(kv); i += 2 {
			w.Header().Set(kv[i], kv[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(status)
		io.WriteString(w, `{"type":"error","error":{"type":"invalid_req`)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}

// resetBeforeAnswer closes the connection without any answer.
func resetBeforeAnswer(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

func jsonError(kind, message string) string {
	return fmt.Sprintf(`{"type":"error","error":{"type":%q,"message":%q},"request_id":"req_1"}`, kind, message)
}

func TestAdversaryEveryErrorAnswer(t *testing.T) {
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name      string
		give      http.HandlerFunc
		wantRetry bool
		wantDelay time.Duration // exact; -1: a positive delay of at least a second
		wantMsg   string
		wantType  string
		wantCode  int
	}{
		{"400 invalid_request_error", answer(400, jsonError("invalid_request_error", "messages: Field required")),
			false, 0, "anthropic: 400 invalid_request_error: messages: Field required", "invalid_request_error", 400},
		{"401 authentication_error", answer(401, jsonError("authentication_error", "invalid x-api-key")),
			false, 0, "anthropic: 401 authentication_error: invalid x-api-key", "authentication_error", 401},
		{"403 permission_error", answer(403, jsonError("permission_error", "no access")),
			false, 0, "anthropic: 403 permission_error: no access", "permission_error", 403},
		{"404 not_found_error", answer(404, jsonError("not_found_error", "model: claude-x")),
			false, 0, "anthropic: 404 not_found_error: model: claude-x", "not_found_error", 404},
		{"413 request_too_large", answer(413, jsonError("request_too_large", "Request exceeds the maximum size")),
			false, 0, "anthropic: 413 request_too_large: Request exceeds the maximum size", "request_too_large", 413},
		{"422 with an empty JSON object", answer(422, `{}`), false, 0, "anthropic: 422 Unprocessable Entity", "", 422},
		{"429 without any header", answer(429, jsonError("rate_limit_error", "slow down")),
			true, 0, "anthropic: 429 rate_limit_error: slow down", "rate_limit_error", 429},
		{"429 with retry-after-ms", answer(429, jsonError("rate_limit_error", "x"), "Retry-After-Ms", "40"),
			true, 40 * time.Millisecond, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 with retry-after-ms and Retry-After: the milliseconds win",
			answer(429, jsonError("rate_limit_error", "x"), "Retry-After-Ms", "40", "Retry-After", "7"),
			true, 40 * time.Millisecond, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 with garbage retry-after-ms falls back to Retry-After",
			answer(429, jsonError("rate_limit_error", "x"), "Retry-After-Ms", "soon", "Retry-After", "7"),
			true, 7 * time.Second, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 with a Retry-After date in the past waits nothing",
			answer(429, jsonError("rate_limit_error", "x"), "Retry-After", past),
			true, 0, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 with a negative Retry-After waits nothing",
			answer(429, jsonError("rate_limit_error", "x"), "Retry-After", "-30"),
			true, 0, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 with a negative retry-after-ms and no Retry-After waits nothing",
			answer(429, jsonError("rate_limit_error", "x"), "Retry-After-Ms", "-30"),
			true, 0, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 with a huge Retry-After waits the longest Duration",
			answer(429, jsonError("rate_limit_error", "x"), "Retry-After", "1e300"),
			true, math.MaxInt64, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 with a garbage Retry-After waits nothing",
			answer(429, jsonError("rate_limit_error", "x"), "Retry-After", "tomorrow-ish"),
			true, 0, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"429 without Retry-After waits for the spent budget",
			answer(429, jsonError("rate_limit_error", "x"), "Anthropic-Ratelimit-Tokens-Remaining", "0",
				"Anthropic-Ratelimit-Tokens-Reset", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)),
			true, -1, "anthropic: 429 rate_limit_error: x", "rate_limit_error", 429},
		{"500 api_error", answer(500, jsonError("api_error", "Internal server error")),
			true, 0, "anthropic: 500 api_error: Internal server error", "api_error", 500},
		{"500 with malformed JSON reads as its status", answer(500, `{"type":"error","error":{"type":"api_err`),
			true, 0, "anthropic: 500 Internal Server Error", "", 500},
		{"500 with JSON of the wrong shape reads as its status", answer(500, `{"error":"boom"}`),
			true, 0, "anthropic: 500 Internal Server Error", "", 500},
		{"502 HTML page from a proxy", answer(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "Content-Type", "text/html"),
			true, 0, "anthropic: 502 Bad Gateway", "", 502},
		{"503 with an empty body", answer(503, ""), true, 0, "anthropic: 503 Service Unavailable", "", 503},
		{"529 overloaded_error", answer(529, jsonError("overloaded_error", "Overloaded")),
			true, 0, "anthropic: 529 overloaded_error: Overloaded", "overloaded_error", 529},
		{"529 with an empty body reads as its bare status", answer(529, ""), true, 0, "anthropic: 529", "", 529},
		{"529 with an HTML body reads as its bare status", answer(529, "<html>overloaded</html>"),
			true, 0, "anthropic: 529", "", 529},
		{"x-should-retry: true on a 400 is retried",
			answer(400, jsonError("invalid_request_error", "x"), "X-Should-Retry", "true", "Retry-After-Ms", "25"),
			true, 25 * time.Millisecond, "anthropic: 400 invalid_request_error: x", "invalid_request_error", 400},
		{"x-should-retry: false on a 529 is not, and drops its wait",
			answer(529, jsonError("overloaded_error", "Overloaded"), "X-Should-Retry", "false", "Retry-After", "5"),
			false, 0, "anthropic: 529 overloaded_error: Overloaded", "overloaded_error", 529},
		{"x-should-retry: garbage leaves the status to decide",
			answer(400, jsonError("invalid_request_error", "x"), "X-Should-Retry", "maybe"),
			false, 0, "anthropic: 400 invalid_request_error: x", "invalid_request_error", 400},
		{"a 400 whose body is cut is still a 400", cutBody(400),
			false, 0, "", "", 400},
		{"a 429 whose body is cut still waits what its headers say", cutBody(429, "Retry-After-Ms", "30"),
			true, 30 * time.Millisecond, "", "", 429},
		{"a 529 whose body is cut with x-should-retry: false is not retried", cutBody(529, "X-Should-Retry", "false"),
			false, 0, "", "", 529},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newRawAPI(t, tt.give)
			_, err := fanoutanthropic.Message(api.client(), ask("k", 10))(t.Context())
			require.Error(t, err)
			assert.EqualValues(t, 1, api.hits.Load(), "one call, one request")

			var apiErr *fanoutanthropic.APIError
			require.ErrorAs(t, err, &apiErr, "%T %v", err, err)
			assert.Equal(t, tt.wantCode, apiErr.Status)
			if tt.wantMsg != "" {
				assert.Equal(t, tt.wantMsg, err.Error())
				assert.Equal(t, tt.wantType, apiErr.Type)
			} else {
				assert.True(t, strings.HasPrefix(err.Error(), fmt.Sprintf("anthropic: %d", tt.wantCode)), err.Error())
			}
			assert.Equal(t, tt.wantRetry, apiErr.Retryable())
			assert.Equal(t, tt.wantRetry, fanout.Retryable(err), "fanout.Retryable")
			var perm *backoff.PermanentError
			assert.Equal(t, !tt.wantRetry, errors.As(err, &perm), "permanent exactly when not retried")
			switch {
			case tt.wantDelay < 0:
				assert.GreaterOrEqual(t, apiErr.RetryAfter(), time.Second)
			default:
				assert.Equal(t, tt.wantDelay, apiErr.RetryAfter())
			}
			assert.False(t, strings.HasSuffix(err.Error(), " "), "no trailing space: %q", err.Error())
		})
	}
}

func TestAdversaryRetriesObeyTheVerdict(t *testing.T) {
	policy := fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond, MaxWait: time.Second}
	for _, tt := range []struct {
		name     string
		give     http.HandlerFunc
		wantHits int64
	}{
		{"a 400 is tried once", answer(400, jsonError("invalid_request_error", "x")), 1},
		{"a 401 is tried once", answer(401, jsonError("authentication_error", "x")), 1},
		{"a 529 is tried MaxAttempts times", answer(529, jsonError("overloaded_error", "Overloaded"), "Retry-After-Ms", "1"), 3},
		{"a 502 HTML page is tried MaxAttempts times", answer(502, "<html>bad gateway</html>"), 3},
		{"a 400 with x-should-retry: true is tried again", answer(400, jsonError("invalid_request_error", "x"), "X-Should-Retry", "true"), 3},
		{"a 529 with x-should-retry: false is tried once", answer(529, jsonError("overloaded_error", "x"), "X-Should-Retry", "false"), 1},
		{"a 429 asking for longer than MaxWait gives up at once", answer(429, jsonError("rate_limit_error", "x"), "Retry-After", "1e300"), 1},
		{"a 400 cut mid-body is tried once", cutBody(400), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := newRawAPI(t, tt.give)
			start := time.Now()
			_, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{task(api.client(), "k")}, fanout.WithRetry(policy))
			require.Error(t, err)
			assert.Equal(t, tt.wantHits, api.hits.Load())
			assert.Less(t, time.Since(start), 5*time.Second)
		})
	}

	t.Run("a huge Retry-After does not pause a shared Limits", func(t *testing.T) {
		api := newRawAPI(t, answer(429, jsonError("rate_limit_error", "x"), "Retry-After", "1e300"))
		limits := &fanoutanthropic.Limits{}
		client := api.client()
		_, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{task(client, "k", fanoutanthropic.WithLimits(limits))},
			fanout.WithRateLimit(limits), fanout.WithRetry(policy))
		require.Error(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		assert.NoError(t, limits.WaitN(ctx, 1), "the next run is not held for ever")
	})
}

func TestAdversaryMessageSettles(t *testing.T) {
	run := func(t *testing.T, client anthropic.Client, tokens int, opts ...fanoutanthropic.Option) (*ledger, error) {
		params := ask("k", 100)
		l := &ledger{}
		_, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{{Key: "k", Tokens: tokens,
			Do: fanoutanthropic.Message(client, params, opts...)}}, fanout.WithRateLimit(l))
		return l, err
	}
	served := func(input, output int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, messageJSON("k", "hi", input, output))
		}
	}

	t.Run("usage larger than the estimate is charged in full", func(t *testing.T) {
		l, err := run(t, newRawAPI(t, served(5000, 300)).client(), 100)
		require.NoError(t, err)
		assert.Equal(t, 5300, l.total())
		assert.Equal(t, 1, l.settles)
	})

	t.Run("usage smaller than the estimate is refunded to a Settler", func(t *testing.T) {
		l, err := run(t, newRawAPI(t, served(3, 2)).client(), 10_000)
		require.NoError(t, err)
		assert.Equal(t, 5, l.total())
	})

	t.Run("cache reads do not count, cache writes do", func(t *testing.T) {
		api := newRawAPI(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],`+
				`"stop_reason":"end_turn","usage":{"input_tokens":10,"output_tokens":20,`+
				`"cache_creation_input_tokens":300,"cache_read_input_tokens":4000}}`)
		})
		l, err := run(t, api.client(), 1)
		require.NoError(t, err)
		assert.Equal(t, 330, l.total())
	})

	for _, tt := range []struct {
		name string
		give http.HandlerFunc
	}{
		{"a 400 settles 0", answer(400, jsonError("invalid_request_error", "x"))},
		{"a 429 settles 0", answer(429, jsonError("rate_limit_error", "x"))},
		{"a 529 with an HTML body settles 0", answer(529, "<html>overloaded</html>")},
		{"a 400 cut mid-body settles 0", cutBody(400)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := run(t, newRawAPI(t, tt.give).client(), 777)
			require.Error(t, err)
			assert.Equal(t, 0, l.total(), "the server served nothing")
			assert.Equal(t, 1, l.settles)
		})
	}

	t.Run("a connection reset before the answer keeps the estimate", func(t *testing.T) {
		l, err := run(t, newRawAPI(t, resetBeforeAnswer).client(), 777)
		require.Error(t, err)
		assert.Equal(t, 777, l.total())
		assert.Zero(t, l.settles)
		var apiErr *fanoutanthropic.APIError
		assert.False(t, errors.As(err, &apiErr), "no answer, no API error")
	})

	t.Run("a success whose body is cut keeps the estimate", func(t *testing.T) {
		api := newRawAPI(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, `{"id":"msg_1","type":"mess`)
			w.(http.Flusher).Flush()
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		})
		l, err := run(t, api.client(), 777)
		require.Error(t, err)
		assert.Equal(t, 777, l.total())
	})
}

func TestAdversaryBadInput(t *testing.T) {
	t.Run("bad options fail every call before any request, never retried", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			opt  fanoutanthropic.Option
			want string
		}{
			{"WithLimits(nil)", fanoutanthropic.WithLimits(nil), "fanoutanthropic: WithLimits(nil)"},
			{"WithTokenCount(nil)", fanoutanthropic.WithTokenCount(nil), "fanoutanthropic: WithTokenCount(nil)"},
			{"negative prices", fanoutanthropic.WithPrices(fanoutanthropic.Prices{Output: -1}), "fanoutanthropic: WithPrices"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				api := newRawAPI(t, answer(200, "{}"))
				rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{task(api.client(), "k", tt.opt)},
					fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
				assert.ErrorContains(t, err, tt.want)
				assert.False(t, fanout.Retryable(err))
				r, _ := rs.Get("k")
				assert.Equal(t, 1, r.Attempts)
				assert.Zero(t, api.hits.Load())
			})
		}
	})

	t.Run("bad options of RunBatch are an error before any request", func(t *testing.T) {
		for _, opt := range []fanoutanthropic.Option{
			fanoutanthropic.WithBatchLimits(fanoutanthropic.MaxBatchRequests+1, 10),
			fanoutanthropic.WithBatchLimits(10, fanoutanthropic.MaxBatchBytes+1),
			fanoutanthropic.WithBatchLimits(10, 0),
			fanoutanthropic.WithPollInterval(0, time.Second),
			fanoutanthropic.WithPollInterval(-time.Second, time.Second),
			fanoutanthropic.WithPrices(fanoutanthropic.Prices{CacheRead: -1}),
			fanoutanthropic.WithTokenCount(nil),
		} {
			api := newRawAPI(t, answer(200, "{}"))
			rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf("a"), opt)
			assert.ErrorContains(t, err, "fanoutanthropic: ")
			assert.Nil(t, rs)
			assert.Zero(t, api.hits.Load())
		}
	})

	t.Run("a zero client is an error before any request", func(t *testing.T) {
		var zero anthropic.Client
		rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{task(zero, "k")},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
		assert.ErrorContains(t, err, "fanoutanthropic: ")
		r, _ := rs.Get("k")
		assert.Equal(t, 1, r.Attempts, "never retried")

		brs, err := fanoutanthropic.RunBatch(t.Context(), zero, batchOf("a"), quickPolls)
		assert.ErrorContains(t, err, "fanoutanthropic: ")
		assert.Nil(t, brs)
	})

	t.Run("empty params are the server's 400, tried once", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{{Key: "k",
			Do: fanoutanthropic.Message(f.client(), anthropic.MessageNewParams{})}},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
		assert.ErrorContains(t, err, "anthropic: 400 invalid_request_error")
		r, _ := rs.Get("k")
		assert.Equal(t, 1, r.Attempts)
	})

	t.Run("Estimate of empty params is zero", func(t *testing.T) {
		assert.Zero(t, fanoutanthropic.Estimate(anthropic.MessageNewParams{}))
	})

	t.Run("Classify passes through what it does not know", func(t *testing.T) {
		assert.NoError(t, fanoutanthropic.Classify(nil))
		var nilSDK *anthropic.Error
		wrapped := fmt.Errorf("x: %w", nilSDK)
		assert.Same(t, wrapped, fanoutanthropic.Classify(wrapped), "a nil *anthropic.Error is not classified")
		assert.Equal(t, context.Canceled, fanoutanthropic.Classify(context.Canceled))
	})
}

// batchAPI is a Message Batches API on 127.0.0.1 of one batch at a time,
// whose every endpoint a test may replace: create, poll, cancel, results.
type batchAPI struct {
	*rawAPI
	mu       sync.Mutex
	ids      []string // the custom_ids of the last batch created, in order
	creates  int
	polls    int
	canceled int

	create  http.HandlerFunc // nil: created
	poll    http.HandlerFunc // nil: ended
	cancel  http.HandlerFunc // nil: canceling
	results func(w http.ResponseWriter, r *http.Request, ids []string)
}

func newBatchAPI(t *testing.T) *batchAPI {
	a := &batchAPI{}
	a.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
		for _, id := range ids {
			io.WriteString(w, succeededLine(id))
		}
	}
	a.rawAPI = newRawAPI(t, a.serve)
	return a
}

func (a *batchAPI) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	a.mu.Lock()
	defer a.mu.Unlock()
	call := func(h http.HandlerFunc, fallback string) {
		if h != nil {
			a.mu.Unlock()
			defer a.mu.Lock()
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, fallback)
	}
	switch {
	case r.Method == http.MethodPost && path == "/v1/messages/batches":
		a.creates++
		if a.create != nil {
			call(a.create, "")
			return
		}
		var body struct {
			Requests []batchLine `json:"requests"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, 400, "invalid_request_error", err.Error())
			return
		}
		a.ids = a.ids[:0]
		for _, req := range body.Requests {
			a.ids = append(a.ids, req.CustomID)
		}
		call(nil, batchStatus("in_progress"))
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/cancel"):
		a.canceled++
		call(a.cancel, batchStatus("canceling"))
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/results"):
		ids := append([]string(nil), a.ids...)
		a.mu.Unlock()
		defer a.mu.Lock()
		w.Header().Set("Content-Type", "application/x-jsonl")
		a.results(w, r, ids)
	case r.Method == http.MethodGet:
		a.polls++
		call(a.poll, batchStatus("ended"))
	default:
		http.NotFound(w, r)
	}
}

func (a *batchAPI) counts() (creates, polls, canceled int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creates, a.polls, a.canceled
}

func batchStatus(status string) string {
	return fmt.Sprintf(`{"id":"msgbatch_1","type":"message_batch","processing_status":%q,`+
		`"request_counts":{"processing":0,"succeeded":0,"errored":0,"canceled":0,"expired":0},`+
		`"created_at":"2026-11-26T11:00:00Z","expires_at":"2026-11-27T11:00:00Z","ended_at":null,`+
		`"cancel_initiated_at":null,"archived_at":null,"results_url":null}`, status)
}

func succeededLine(id string) string {
	return fmt.Sprintf("{\"custom_id\":%q,\"result\":{\"type\":\"succeeded\",\"message\":%s}}\n", id, messageJSON(id, "answer to "+id, 10, 5))
}

func resultLine(id, result string) string {
	return fmt.Sprintf("{\"custom_id\":%q,\"result\":%s}\n", id, result)
}

func erroredResult(kind string) string {
	return fmt.Sprintf(`{"type":"errored","error":{"type":"error","error":{"type":%q,"message":"m"},"request_id":"req_b"}}`, kind)
}

func TestAdversaryRunBatchResults(t *testing.T) {
	keys := []string{"a", "b", "c", "d"}

	t.Run("a key the results leave out gets an error saying so", func(t *testing.T) {
		api := newBatchAPI(t)
		api.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
			io.WriteString(w, succeededLine(ids[0])+succeededLine(ids[2]))
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
		require.Error(t, err)
		assert.Equal(t, 2, rs.Succeeded())
		for _, k := range []string{"b", "d"} {
			r, _ := rs.Get(k)
			assert.ErrorContains(t, r.Err, "has no result for the key", k)
		}
	})

	t.Run("lines of unknown ids and repeated lines change nothing", func(t *testing.T) {
		api := newBatchAPI(t)
		api.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
			io.WriteString(w, succeededLine("stranger"))
			for _, id := range ids {
				io.WriteString(w, succeededLine(id)+resultLine(id, `{"type":"expired"}`))
			}
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
		require.NoError(t, err)
		assert.Equal(t, len(keys), rs.Succeeded())
		assert.Equal(t, len(keys), rs.Len())
	})

	t.Run("a garbage line loses no other key's answer", func(t *testing.T) {
		for _, garbage := range []string{"not json at all\n", "\n", `{"custom_id":"b","result":` + "\n", "<html>oops</html>\n"} {
			api := newBatchAPI(t)
			api.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
				io.WriteString(w, succeededLine(ids[0])+garbage+succeededLine(ids[2])+succeededLine(ids[3]))
			}
			rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
			require.Error(t, err)
			assert.Equal(t, 3, rs.Succeeded(), "garbage %q", garbage)
			b, _ := rs.Get("b")
			assert.Error(t, b.Err)
		}
	})

	t.Run("a results stream cut part-way keeps what was read", func(t *testing.T) {
		api := newBatchAPI(t)
		api.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
			w.Header().Set("Content-Length", "100000")
			io.WriteString(w, succeededLine(ids[0])+succeededLine(ids[1])+`{"custom_id":"c","res`)
			w.(http.Flusher).Flush()
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
		require.Error(t, err)
		assert.Equal(t, 2, rs.Succeeded())
		for _, k := range []string{"c", "d"} {
			r, _ := rs.Get(k)
			assert.ErrorContains(t, r.Err, "reading the results of batch", k)
		}
	})

	t.Run("the results endpoint refusing fails every key", func(t *testing.T) {
		api := newBatchAPI(t)
		api.results = func(w http.ResponseWriter, _ *http.Request, _ []string) {
			writeError(w, 404, "not_found_error", "results expired")
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
		require.Error(t, err)
		for _, r := range rs.All() {
			var apiErr *fanoutanthropic.APIError
			require.ErrorAs(t, r.Err, &apiErr, r.Key)
			assert.Equal(t, 404, apiErr.Status)
		}
	})

	t.Run("an expired batch and a batch canceled by someone else", func(t *testing.T) {
		for _, tt := range []struct {
			result string
			want   error
		}{{`{"type":"expired"}`, fanoutanthropic.ErrBatchExpired}, {`{"type":"canceled"}`, fanoutanthropic.ErrBatchCanceled}} {
			api := newBatchAPI(t)
			api.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
				for _, id := range ids {
					io.WriteString(w, resultLine(id, tt.result))
				}
			}
			rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
			require.Error(t, err)
			for _, r := range rs.All() {
				assert.ErrorIs(t, r.Err, tt.want, r.Key)
				assert.Zero(t, r.Cost)
			}
			assert.ErrorIs(t, err, tt.want)
		}
	})

	t.Run("errored requests are classified by their type", func(t *testing.T) {
		api := newBatchAPI(t)
		kinds := []string{"overloaded_error", "invalid_request_error", "rate_limit_error", "api_error"}
		api.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
			for i, id := range ids {
				io.WriteString(w, resultLine(id, erroredResult(kinds[i])))
			}
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
		require.Error(t, err)
		for i, r := range rs.All() {
			var apiErr *fanoutanthropic.APIError
			require.ErrorAs(t, r.Err, &apiErr)
			assert.Equal(t, kinds[i], apiErr.Type)
			assert.Zero(t, apiErr.Status)
			assert.Equal(t, kinds[i] != "invalid_request_error", fanout.Retryable(r.Err), kinds[i])
		}
	})

	t.Run("a result of an unknown type is an error", func(t *testing.T) {
		api := newBatchAPI(t)
		api.results = func(w http.ResponseWriter, _ *http.Request, ids []string) {
			for _, id := range ids {
				io.WriteString(w, resultLine(id, `{"type":"teleported"}`))
			}
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf(keys...), quickPolls)
		require.Error(t, err)
		assert.Zero(t, rs.Succeeded())
		assert.ErrorContains(t, err, `unknown type "teleported"`)
	})
}

func TestAdversaryRunBatchCreation(t *testing.T) {
	for _, tt := range []struct {
		name        string
		give        http.HandlerFunc
		wantCreates int
		wantStatus  int // of each key's *APIError; 0: no APIError
	}{
		{"keys the API rejects: a 400 is tried once", answer(400, jsonError("invalid_request_error", "requests.0.custom_id: bad")), 1, 400},
		{"a 413 is tried once", answer(413, jsonError("request_too_large", "too large")), 1, 413},
		{"a 401 is tried once", answer(401, jsonError("authentication_error", "x")), 1, 401},
		{"a 529 with x-should-retry: false is tried once", answer(529, jsonError("overloaded_error", "x"), "X-Should-Retry", "false"), 1, 529},
		{"a 400 with x-should-retry: true is tried 5 times", answer(400, jsonError("invalid_request_error", "x"), "X-Should-Retry", "true", "Retry-After-Ms", "1"), 5, 400},
		{"a 429 is tried 5 times", answer(429, jsonError("rate_limit_error", "x"), "Retry-After-Ms", "1"), 5, 429},
		{"a 529 HTML page is tried 5 times", answer(529, "<html>overloaded</html>"), 5, 529},
		{"a 429 cut mid-body is tried 5 times", cutBody(429, "Retry-After-Ms", "1"), 5, 429},
		{"a connection reset is tried once: the batch may exist", resetBeforeAnswer, 1, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := newBatchAPI(t)
			api.create = tt.give
			rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf("a", "b"), quickPolls)
			require.Error(t, err)
			creates, polls, _ := api.counts()
			assert.Equal(t, tt.wantCreates, creates)
			assert.Zero(t, polls)
			for _, r := range rs.All() {
				require.Error(t, r.Err)
				var apiErr *fanoutanthropic.APIError
				if tt.wantStatus == 0 {
					assert.False(t, errors.As(r.Err, &apiErr))
					continue
				}
				require.ErrorAs(t, r.Err, &apiErr, r.Key)
				assert.Equal(t, tt.wantStatus, apiErr.Status)
			}
		})
	}
}

func TestAdversaryRunBatchPolling(t *testing.T) {
	t.Run("a poll the server refuses for good ends the batch's keys", func(t *testing.T) {
		api := newBatchAPI(t)
		api.poll = answer(404, jsonError("not_found_error", "batch not found"))
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf("a", "b"), quickPolls)
		require.Error(t, err)
		for _, r := range rs.All() {
			assert.ErrorContains(t, r.Err, "polling batch msgbatch_1")
			assert.False(t, fanout.Retryable(r.Err))
		}
	})

	t.Run("polls refused for now are polled again", func(t *testing.T) {
		api := newBatchAPI(t)
		var n atomic.Int64
		api.poll = func(w http.ResponseWriter, r *http.Request) {
			switch n.Add(1) {
			case 1:
				answer(529, jsonError("overloaded_error", "Overloaded"))(w, r)
			case 2:
				answer(502, "<html>bad gateway</html>")(w, r)
			case 3:
				resetBeforeAnswer(w, r)
			default:
				answer(200, batchStatus("ended"), "Content-Type", "application/json")(w, r)
			}
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf("a", "b"), quickPolls)
		require.NoError(t, err)
		assert.Equal(t, 2, rs.Succeeded())
		assert.EqualValues(t, 4, n.Load())
	})
}

// hold answers nothing until the client closes the request, and reports
// on arrived when the request arrives and on closed when it is closed.
func hold(arrived, closed chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			closed <- struct{}{}
		case <-time.After(30 * time.Second):
		}
	}
}

// within waits for ch, or fails the test after 5 s.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not within 5 s", what)
	}
}

func TestAdversaryCancellation(t *testing.T) {
	stop := errors.New("user pressed stop")

	t.Run("a context ended before the call sends nothing", func(t *testing.T) {
		api := newRawAPI(t, answer(200, "{}"))
		ctx, cancel := context.WithCancelCause(t.Context())
		cancel(stop)
		l := &ledger{}
		rs, err := fanout.Run(ctx, []fanout.Task[*anthropic.Message]{task(api.client(), "k")}, fanout.WithRateLimit(l))
		require.Error(t, err)
		r, _ := rs.Get("k")
		assert.ErrorIs(t, r.Err, stop)
		assert.Zero(t, api.hits.Load())
		_, err = fanoutanthropic.Message(api.client(), ask("k", 10))(ctx)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, api.hits.Load())
	})

	t.Run("a context ended mid-request closes it, keeps the estimate, and frees the Limits", func(t *testing.T) {
		arrived, closed := make(chan struct{}, 1), make(chan struct{}, 1)
		api := newRawAPI(t, hold(arrived, closed))
		limits := &fanoutanthropic.Limits{} // cold: one call at a time until an answer
		l := &ledger{}
		ctx, cancel := context.WithCancelCause(t.Context())
		go func() { <-arrived; cancel(stop) }()
		rs, err := fanout.Run(ctx, []fanout.Task[*anthropic.Message]{task(api.client(), "k", fanoutanthropic.WithLimits(limits))},
			fanout.WithRateLimit(limits), fanout.WithRateLimit(l))
		require.Error(t, err)
		within(t, closed, "the server sees the request closed")
		r, _ := rs.Get("k")
		assert.ErrorIs(t, r.Err, stop)
		assert.Zero(t, l.settles, "cut short: the estimate stands")
		wctx, wcancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer wcancel()
		assert.NoError(t, limits.WaitN(wctx, 1), "the probe cut short lets the next one through")
	})

	t.Run("RunBatch: mid-creation", func(t *testing.T) {
		arrived, closed := make(chan struct{}, 1), make(chan struct{}, 1)
		api := newBatchAPI(t)
		api.create = hold(arrived, closed)
		ctx, cancel := context.WithCancelCause(t.Context())
		go func() { <-arrived; cancel(stop) }()
		rs, err := fanoutanthropic.RunBatch(ctx, api.client(), batchOf("a", "b"), quickPolls)
		require.Error(t, err)
		within(t, closed, "the creation request is closed")
		for _, r := range rs.All() {
			assert.ErrorIs(t, r.Err, fanoutanthropic.ErrBatchCanceled, r.Key)
			assert.ErrorIs(t, r.Err, stop, r.Key)
		}
	})

	t.Run("RunBatch: waiting to retry a refused creation", func(t *testing.T) {
		api := newBatchAPI(t)
		api.create = answer(429, jsonError("rate_limit_error", "x"), "Retry-After", "20")
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(50*time.Millisecond, func() { cancel(stop) })
		start := time.Now()
		rs, err := fanoutanthropic.RunBatch(ctx, api.client(), batchOf("a"), quickPolls)
		require.Error(t, err)
		assert.Less(t, time.Since(start), 5*time.Second, "returns at once")
		r, _ := rs.Get("a")
		assert.ErrorIs(t, r.Err, fanoutanthropic.ErrBatchCanceled)
		assert.ErrorIs(t, r.Err, stop)
	})

	t.Run("RunBatch: a creation refused with a wait over 30 s fails at once", func(t *testing.T) {
		api := newBatchAPI(t)
		api.create = answer(429, jsonError("rate_limit_error", "x"), "Retry-After", "3600")
		start := time.Now()
		rs, err := fanoutanthropic.RunBatch(t.Context(), api.client(), batchOf("a"), quickPolls)
		require.Error(t, err)
		assert.Less(t, time.Since(start), 5*time.Second, "no hour-long wait")
		r, _ := rs.Get("a")
		var apiErr *fanoutanthropic.APIError
		require.ErrorAs(t, r.Err, &apiErr)
		assert.Equal(t, 429, apiErr.Status)
		created, _, _ := api.counts()
		assert.Equal(t, 1, created, "tried once")
	})

	t.Run("RunBatch: mid-poll", func(t *testing.T) {
		arrived, closed := make(chan struct{}, 1), make(chan struct{}, 1)
		api := newBatchAPI(t)
		api.poll = hold(arrived, closed)
		ctx, cancel := context.WithCancelCause(t.Context())
		go func() { <-arrived; cancel(stop) }()
		rs, err := fanoutanthropic.RunBatch(ctx, api.client(), batchOf("a", "b"), quickPolls)
		require.Error(t, err)
		within(t, closed, "the poll is closed")
		_, _, canceled := api.counts()
		assert.Equal(t, 1, canceled, "the batch is canceled on the server")
		for _, r := range rs.All() {
			assert.ErrorIs(t, r.Err, fanoutanthropic.ErrBatchCanceled, r.Key)
			assert.ErrorIs(t, r.Err, stop, r.Key)
		}
	})

	t.Run("RunBatch: the cancellation refused still reports the cause", func(t *testing.T) {
		api := newBatchAPI(t)
		api.poll = answer(200, batchStatus("in_progress"), "Content-Type", "application/json")
		api.cancel = answer(500, jsonError("api_error", "boom"))
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(50*time.Millisecond, func() { cancel(stop) })
		rs, err := fanoutanthropic.RunBatch(ctx, api.client(), batchOf("a"), quickPolls)
		require.Error(t, err)
		r, _ := rs.Get("a")
		assert.ErrorIs(t, r.Err, fanoutanthropic.ErrBatchCanceled)
		assert.ErrorIs(t, r.Err, stop)
		assert.ErrorContains(t, r.Err, "cancellation failed")
	})

	t.Run("RunBatch: while reading the results", func(t *testing.T) {
		arrived := make(chan struct{}, 1)
		api := newBatchAPI(t)
		api.results = func(w http.ResponseWriter, r *http.Request, ids []string) {
			io.WriteString(w, succeededLine(ids[0]))
			w.(http.Flusher).Flush()
			arrived <- struct{}{}
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		}
		ctx, cancel := context.WithCancelCause(t.Context())
		go func() {
			<-arrived
			time.Sleep(200 * time.Millisecond) // for the first line to reach the client
			cancel(stop)
		}()
		start := time.Now()
		rs, err := fanoutanthropic.RunBatch(ctx, api.client(), batchOf("a", "b", "c"), quickPolls)
		require.Error(t, err)
		assert.Less(t, time.Since(start), 5*time.Second, "returns at once")
		a, _ := rs.Get("a")
		assert.NoError(t, a.Err, "the answer read before the end is kept")
		for _, k := range []string{"b", "c"} {
			r, _ := rs.Get(k)
			assert.ErrorIs(t, r.Err, fanoutanthropic.ErrBatchCanceled, k)
			assert.ErrorIs(t, r.Err, stop, k)
		}
	})

	t.Run("RunBatch: a context ended before the call sends nothing", func(t *testing.T) {
		api := newBatchAPI(t)
		ctx, cancel := context.WithCancelCause(t.Context())
		cancel(stop)
		rs, err := fanoutanthropic.RunBatch(ctx, api.client(), batchOf("a"), quickPolls)
		require.Error(t, err)
		r, _ := rs.Get("a")
		assert.ErrorIs(t, r.Err, fanoutanthropic.ErrBatchCanceled)
		assert.ErrorIs(t, r.Err, stop)
		assert.Zero(t, api.hits.Load())
	})
}

func TestAdversaryLimitsHeaders(t *testing.T) {
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

	t.Run("garbage headers are ignored and leave calls unlimited", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, headers(
				"Anthropic-Ratelimit-Tokens-Limit", "lots", "Anthropic-Ratelimit-Tokens-Remaining", "none",
				"Anthropic-Ratelimit-Tokens-Reset", rfc(time.Now().Add(time.Hour)),
				"Anthropic-Ratelimit-Requests-Remaining", "0", "Anthropic-Ratelimit-Requests-Reset", "yesterday",
				"Anthropic-Ratelimit-Input-Tokens-Remaining", "0", // no reset at all
				"Anthropic-Ratelimit-", "0", "Anthropic-Ratelimit--Reset", rfc(time.Now().Add(time.Hour)),
			))
			assert.Empty(t, l.Budgets())
			for range 5 {
				w := wait(t.Context(), &l, 1000)
				assert.True(t, w.done.Load())
			}
		})
	})

	t.Run("a negative remaining count is none left", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			start := time.Now()
			respond(t, &l, report("Tokens", 1000, -50, start.Add(time.Second)))
			w := wait(t.Context(), &l, 500)
			assert.False(t, w.done.Load())
			time.Sleep(2 * time.Second)
			require.True(t, w.done.Load())
			assert.WithinDuration(t, start.Add(500*time.Millisecond), w.at, time.Millisecond)
		})
	})

	t.Run("a budget whose reset is past is full", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, report("Tokens", 1000, 0, time.Now().Add(-time.Minute)))
			respond(t, &l, headers("Anthropic-Ratelimit-Requests-Remaining", "0",
				"Anthropic-Ratelimit-Requests-Reset", rfc(time.Now().Add(-time.Second))))
			assert.True(t, wait(t.Context(), &l, 900).done.Load())
		})
	})

	t.Run("a late answer with an older report does not undo a newer one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			now := time.Now()
			first, second := send(t, &l), send(t, &l)
			second.answer(report("Tokens", 1000, 900, now.Add(3*time.Second)))
			first.answer(report("Tokens", 1000, 0, now.Add(2*time.Second))) // stale: admitted before the 900
			w := wait(t.Context(), &l, 800)
			assert.True(t, w.done.Load(), "900 left, by the newest report")
		})
	})

	t.Run("a reset a year away holds a wait only until its context ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, report("Requests", 50, 0, time.Now().Add(365*24*time.Hour)))
			ctx, cancel := context.WithTimeoutCause(t.Context(), time.Second, stopErr)
			defer cancel()
			start := time.Now()
			assert.ErrorIs(t, l.WaitN(ctx, 1), stopErr)
			assert.Equal(t, time.Second, time.Since(start))
		})
	})

	t.Run("a negative or huge n is no trouble", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			start := time.Now()
			respond(t, &l, report("Tokens", 1000, 1000, start.Add(time.Second)))
			require.NoError(t, l.WaitN(t.Context(), -5))
			respond(t, &l, report("Tokens", 1000, 1000, start.Add(2*time.Second)))
			w := wait(t.Context(), &l, math.MaxInt)
			time.Sleep(3 * time.Second)
			require.True(t, w.done.Load(), "a call larger than the budget waits for it to be full, not for ever")
			assert.NoError(t, w.err)
		})
	})

	t.Run("Settle goes to the limiter of its own, both ways", func(t *testing.T) {
		own := &ledger{}
		l := fanoutanthropic.NewLimits(own)
		f := newFakeAPI()
		defer f.Close()
		rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{
			{Key: "over", Tokens: 10_000, Do: fanoutanthropic.Message(f.client(), ask("over", 10), fanoutanthropic.WithLimits(l))},
			{Key: "under", Tokens: 1, Do: fanoutanthropic.Message(f.client(), ask("under", 400), fanoutanthropic.WithLimits(l))},
		}, fanout.WithRateLimit(l))
		require.NoError(t, err)
		assert.EqualValues(t, rs.Cost().Tokens, own.total())
		assert.Equal(t, 2, own.settles)
	})
}

var stopErr = errors.New("stop")

func TestAdversaryLimitsUnderConcurrentRuns(t *testing.T) {
	f := newFakeAPI()
	defer f.Close()
	f.tokens = newBucket(2_000, 500*time.Millisecond)
	f.requests = newBucket(6, 500*time.Millisecond)
	// Answers come back out of the order their requests went out in.
	f.latency = func(key string, _ int) time.Duration { return time.Duration(len(key)*7%40) * time.Millisecond }
	client := f.client()
	limits := &fanoutanthropic.Limits{}
	const runs, calls = 3, 18
	tasks := make([][]fanout.Task[*anthropic.Message], runs)
	for i := range calls {
		key := strings.Repeat("k", i+1)
		tasks[i%runs] = append(tasks[i%runs], fanout.Task[*anthropic.Message]{Key: key, Tokens: 500,
			Do: fanoutanthropic.Message(client, ask(key, 480), fanoutanthropic.WithLimits(limits))})
	}
	var wg sync.WaitGroup
	succeeded := make([]int, runs)
	for r := range runs {
		wg.Go(func() {
			rs, err := fanout.Run(t.Context(), tasks[r], fanout.WithRateLimit(limits),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}))
			assert.NoError(t, err)
			succeeded[r] = rs.Succeeded()
		})
	}
	wg.Wait()
	hits, tooMany, _ := f.count()
	for r := range runs {
		assert.Equal(t, calls/runs, succeeded[r], "run %d", r)
	}
	assert.LessOrEqual(t, tooMany, 1, "%d hits", hits)
}
