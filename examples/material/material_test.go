package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func offline() Recommender {
	return Recommender{Analyst: TableAnalyst{}, Judge: TableJudge{}, Timeout: time.Second}
}

func TestSamplePartsGetTheMaterialTheirNeedsCallFor(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{"drone-arm", "composite"},
		{"gate-hinge", "metal"},
		{"kiln-support", "ceramic"},
		{"door-seal", "elastomer"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			p, err := loadPart(tt.give)
			require.NoError(t, err)
			rec, err := offline().Recommend(context.Background(), p)
			require.NoError(t, err)
			assert.Equal(t, tt.want, rec.Material)
			assert.Greater(t, rec.Confidence, 0.5)
			assert.LessOrEqual(t, rec.Confidence, 1.0)
			assert.Len(t, rec.Analyses, len(Families))
		})
	}
}

func TestRuledOutFamiliesSayWhy(t *testing.T) {
	p, err := loadPart("gate-hinge")
	require.NoError(t, err)
	rec, err := offline().Recommend(context.Background(), p)
	require.NoError(t, err)
	byFamily := map[string]Analysis{}
	for _, r := range rec.Analyses {
		byFamily[r.Key] = r.Value
	}
	assert.Equal(t, []string{"costs $40.0/kg, over the $10.0/kg allowed"}, byFamily["composite"].Disqualified)
	assert.Contains(t, byFamily["ceramic"].Disqualified, "brittle under impact loads")
	assert.Zero(t, byFamily["wood"].Suitability)
	assert.Contains(t, rec.Rationale, "5 of 6 families ruled out")
}

// flaky fails one family and leaves another hanging past its deadline.
type flaky struct{ TableAnalyst }

func (f flaky) Analyze(ctx context.Context, p Part, fam string) (Analysis, error) {
	switch fam {
	case "metal":
		return Analysis{}, errors.New("analyst unavailable")
	case "wood":
		<-ctx.Done()
		return Analysis{}, ctx.Err()
	}
	return f.TableAnalyst.Analyze(ctx, p, fam)
}

func TestAFailedAnalystLosesNoOtherFamily(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := loadPart("drone-arm")
		require.NoError(t, err)
		rc := Recommender{Analyst: flaky{TableAnalyst{Latency: 100 * time.Millisecond}}, Judge: TableJudge{}, Timeout: 2 * time.Second}
		rec, err := rc.Recommend(context.Background(), p)
		require.NoError(t, err)
		assert.Equal(t, "composite", rec.Material)
		errs := map[string]error{}
		for _, r := range rec.Analyses {
			if r.Err != nil {
				errs[r.Key] = r.Err
			}
		}
		require.Len(t, errs, 2)
		assert.ErrorContains(t, errs["metal"], "analyst unavailable")
		assert.ErrorIs(t, errs["wood"], fanout.ErrTaskTimeout)
		assert.Contains(t, rec.Rationale, "not heard from: metal")
		// wood timed out twice, at 2s each, with a jittered ~100ms between.
		assert.GreaterOrEqual(t, rec.FanOut, 4*time.Second)
		assert.Less(t, rec.FanOut, 4200*time.Millisecond)
	})
}

func TestBranchesRunInParallel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := loadPart("gate-hinge")
		require.NoError(t, err)
		rc := Recommender{Analyst: TableAnalyst{Latency: time.Second}, Judge: TableJudge{}, Timeout: time.Minute}
		rec, err := rc.Recommend(context.Background(), p)
		require.NoError(t, err)
		var slowest time.Duration
		for _, r := range rec.Analyses {
			slowest = max(slowest, r.Elapsed)
		}
		assert.Equal(t, slowest, rec.FanOut, "the fan-out takes as long as its slowest analyst")
		assert.Greater(t, rec.Sequential(), 4*rec.FanOut)
	})
}

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
			var p Part
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(user, "Part specification:\n")), &p))
			f, _ := family(fam)
			a, _ := json.Marshal(score(p, f))
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
	p, err := loadPart("drone-arm")
	require.NoError(t, err)
	rc := Recommender{Analyst: c, Judge: c, Timeout: 10 * time.Second}
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
	p, err := loadPart("gate-hinge")
	require.NoError(t, err)
	rec, err := Recommender{Analyst: c, Judge: c, Timeout: 10 * time.Second}.Recommend(context.Background(), p)
	require.NoError(t, err)
	attempts := 0
	for _, r := range rec.Analyses {
		require.NoError(t, r.Err, r.Key)
		attempts += r.Attempts
	}
	assert.Equal(t, 7, attempts, "one analyst was refused once and retried")
}

func TestDecodeJSON(t *testing.T) {
	var v Verdict
	require.NoError(t, decodeJSON("Sure!\n```json\n{\"material\": \"wood\"}\n```", &v))
	assert.Equal(t, "wood", v.Material)
	assert.ErrorContains(t, decodeJSON("no idea", &v), "no JSON object")
}
