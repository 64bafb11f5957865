package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/gofanout/fanout"
)

// messagesServer answers POST /v1/messages on loopback as the Messages API
// does, with reply(n) for the n-th request (from 1).
func messagesServer(t *testing.T, reply func(n int, w http.ResponseWriter, body map[string]any)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if r.Header.Get("X-Api-Key") != "test-key" {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		var body map[string]any
		raw, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		reply(int(n.Add(1)), w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func message(text string) string {
	return `{"id":"msg_01","type":"message","role":"assistant","model":"claude-haiku-4-5",` +
		`"content":[{"type":"text","text":` + mustJSON(text) + `}],"stop_reason":"end_turn","stop_sequence":null,` +
		`"usage":{"input_tokens":31,"output_tokens":2}}`
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func apiErrorBody(kind, msg string) string {
	return `{"type":"error","error":{"type":"` + kind + `","message":"` + msg + `"}}`
}

func testClaude(srv *httptest.Server) *Claude {
	return NewClaude("claude-haiku-4-5", option.WithBaseURL(srv.URL), option.WithAPIKey("test-key"),
		option.WithHTTPClient(srv.Client()))
}

func TestClaude(t *testing.T) {
	item := Item{ID: 4, Text: "The kettle was great.", Label: Positive}

	t.Run("asks for one sampled word and reports the tokens", func(t *testing.T) {
		var got map[string]any
		srv, _ := messagesServer(t, func(_ int, w http.ResponseWriter, body map[string]any) {
			got = body
			io.WriteString(w, message("Positive."))
		})
		c := testClaude(srv)
		res, err := fanout.Run(t.Context(), []fanout.Task[string]{{Key: "s1", Do: func(ctx context.Context) (string, error) {
			return c.Classify(ctx, Query{Item: item, Sample: 1, Try: 1})
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := res.Value("s1"); parseLabel(v) != Positive {
			t.Errorf("answer %q, want one that parses as positive", v)
		}
		if tokens := res.Cost().Tokens; tokens != 33 {
			t.Errorf("spent %d tokens, want 31 + 2", tokens)
		}
		if got["model"] != "claude-haiku-4-5" || got["temperature"] != 1.0 || got["max_tokens"] != 5.0 {
			t.Errorf("request %v: want the model, temperature 1 and 5 tokens at most", got)
		}
		if !strings.Contains(mustJSON(got["system"]), "positive, negative or neutral") ||
			!strings.Contains(mustJSON(got["messages"]), item.Text) {
			t.Errorf("request %v: want the instructions in system and the text in messages", got)
		}
	})

	t.Run("an overload is retried by the run, after the delay the API asks", func(t *testing.T) {
		srv, n := messagesServer(t, func(n int, w http.ResponseWriter, _ map[string]any) {
			if n == 1 {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(529)
				io.WriteString(w, apiErrorBody("overloaded_error", "Overloaded"))
				return
			}
			io.WriteString(w, message("negative"))
		})
		c := testClaude(srv)
		_, err := c.Classify(t.Context(), Query{Item: item, Sample: 1, Try: 1})
		var herr *fanout.HTTPError
		if !errors.As(err, &herr) || herr.StatusCode != 529 || herr.RetryAfter() != 7*time.Second {
			t.Fatalf("got %v, want an *fanout.HTTPError of 529 asking for 7 s", err)
		}
		if !strings.Contains(err.Error(), "Overloaded") {
			t.Errorf("error %q lacks the API's message", err)
		}
		if n.Load() != 1 {
			t.Errorf("%d requests; the SDK must not retry on its own", n.Load())
		}
	})

	t.Run("a bad request is not retried", func(t *testing.T) {
		srv, n := messagesServer(t, func(_ int, w http.ResponseWriter, _ map[string]any) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, apiErrorBody("invalid_request_error", "max_tokens: too small"))
		})
		c := testClaude(srv)
		res, _ := fanout.Run(t.Context(), []fanout.Task[string]{{Key: "s1", Do: func(ctx context.Context) (string, error) {
			return c.Classify(ctx, Query{Item: item, Sample: 1, Try: 1})
		}}}, fanout.WithRetry(fanout.RetryPolicy{InitialInterval: time.Millisecond}))
		if got, _ := res.Get("s1"); got.Attempts != 1 || got.Err == nil {
			t.Errorf("got %d attempts, error %v; want 1 attempt and an error", got.Attempts, got.Err)
		}
		if n.Load() != 1 {
			t.Errorf("%d requests, want 1", n.Load())
		}
	})
}

// TestClaudeVote runs a vote on Claude over loopback: the first call is
// told to back off, is retried, and the vote still decides after three
// alike answers, skipping the last two samples.
func TestClaudeVote(t *testing.T) {
	srv, n := messagesServer(t, func(n int, w http.ResponseWriter, _ map[string]any) {
		if n == 1 {
			w.Header().Set("retry-after-ms", "20")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, apiErrorBody("rate_limit_error", "slow down"))
			return
		}
		io.WriteString(w, message("Negative"))
	})
	v := &Voter{Classifier: testClaude(srv), Samples: 5, InFlight: 1, Options: []fanout.Option{
		fanout.WithRateLimit(fanout.NewThrottle(nil)),
		fanout.WithRetry(fanout.RetryPolicy{InitialInterval: time.Millisecond}),
	}}
	got, err := v.Classify(t.Context(), Item{ID: 2, Text: "The jacket was flimsy.", Label: Negative})
	if err != nil {
		t.Fatal(err)
	}
	if got.Label != Negative || got.Tally.Votes != 3 {
		t.Errorf("got %s with %v votes, want negative with 3", got.Label, got.Tally.Votes)
	}
	if n.Load() < 4 || got.Started < 3 {
		t.Errorf("%d requests, %d samples started; want the refused one and three answers", n.Load(), got.Started)
	}
}
