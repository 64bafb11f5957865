package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/examples/material/advisor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunPrintsARecommendation(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "")
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-part", "gate-hinge", "-latency", "0"}, &out))
	assert.Contains(t, out.String(), "-> METAL (confidence 0.81)")
	assert.Contains(t, out.String(), "six analyses:")
	assert.Error(t, run(context.Background(), []string{"-part", "no-such-part"}, io.Discard))
}

// messagesAPI is a local stand-in for the Anthropic Messages API: it
// answers each analyst from the property table and the judge with the
// family it is told scored best.
func messagesAPI(t *testing.T, calls *atomic.Int32) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/v1/messages" || r.Header.Get("X-Api-Key") != "test-key" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		var req struct {
			Model  string `json:"model"`
			System []struct {
				Text string `json:"text"`
			} `json:"system"`
			Messages []struct {
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		system, user := req.System[0].Text, req.Messages[0].Content[0].Text
		var answer string
		if strings.Contains(system, "lead materials engineer") {
			answer = `Here is my pick: {"material": "composite", "confidence": 0.8, "rationale": "Lightest stiff option."}`
		} else {
			var fam string
			fmt.Sscanf(system, "You are a materials engineer who specialises in %s", &fam)
			var p advisor.Part
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(user, "Part specification:\n")), &p))
			analysis, err := advisor.TableAnalyst{}.Analyze(r.Context(), p, fam)
			require.NoError(t, err)
			a, _ := json.Marshal(analysis)
			answer = "```json\n" + string(a) + "\n```"
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": "msg_test", "type": "message", "role": "assistant", "model": req.Model,
			"content":     []map[string]any{{"type": "text", "text": answer}},
			"stop_reason": "end_turn", "usage": map[string]any{"input_tokens": 100, "output_tokens": 40},
		})
	}))
}

func TestClaudeThroughTheMessagesAPI(t *testing.T) {
	var calls atomic.Int32
	srv := messagesAPI(t, &calls)
	defer srv.Close()
	c := NewClaude("claude-test", option.WithBaseURL(srv.URL), option.WithAPIKey("test-key"))
	p, err := advisor.LoadPart("drone-arm")
	require.NoError(t, err)
	rc := advisor.Recommender{Analyst: c, Judge: c, Timeout: 10 * time.Second}
	rec, err := rc.Recommend(context.Background(), p)
	require.NoError(t, err)
	assert.Equal(t, int32(7), calls.Load(), "six analysts and one judge")
	assert.Equal(t, "composite", rec.Material)
	assert.Equal(t, 0.8, rec.Confidence)
	for _, r := range rec.Analyses {
		require.NoError(t, r.Err, r.Key)
		assert.Equal(t, r.Key, r.Value.Family)
		assert.Equal(t, fanout.Cost{Tokens: 140}, r.Cost, "each analyst reports its tokens")
	}
}

func TestClaudeRateLimitIsRetriedAsTheServerAsks(t *testing.T) {
	var calls atomic.Int32
	api := messagesAPI(t, &calls)
	defer api.Close()
	var refused atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refused.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After-Ms", "10")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`)
			return
		}
		r.URL.Host = strings.TrimPrefix(api.URL, "http://")
		r.URL.Scheme = "http"
		r.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer srv.Close()
	c := NewClaude("claude-test", option.WithBaseURL(srv.URL), option.WithAPIKey("test-key"))
	p, err := advisor.LoadPart("gate-hinge")
	require.NoError(t, err)
	rec, err := advisor.Recommender{Analyst: c, Judge: c, Timeout: 10 * time.Second}.Recommend(context.Background(), p)
	require.NoError(t, err)
	attempts := 0
	for _, r := range rec.Analyses {
		require.NoError(t, r.Err, r.Key)
		attempts += r.Attempts
	}
	assert.Equal(t, 7, attempts, "one analyst was refused once and retried")
}

func TestDecodeJSON(t *testing.T) {
	var v advisor.Verdict
	require.NoError(t, decodeJSON("Sure!\n```json\n{\"material\": \"wood\"}\n```", &v))
	assert.Equal(t, "wood", v.Material)
	assert.ErrorContains(t, decodeJSON("no idea", &v), "no JSON object")
}
