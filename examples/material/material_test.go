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
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
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
	assert.Contains(t, out.String(), "a verdict needs 3 of the 6 analyses")
	assert.Contains(t, out.String(), "-> METAL (confidence 0.81)")
	assert.Contains(t, out.String(), "six analyses:")
	assert.Error(t, run(context.Background(), []string{"-part", "no-such-part"}, io.Discard))
}

func TestHelpIsNotAnError(t *testing.T) {
	bin := buildMaterial(t)
	cmd := exec.Command(bin, "-h")
	cmd.Env = append(os.Environ(), "ANTHROPIC_API_KEY=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "-h exits 0:\n%s", out)
	assert.Contains(t, string(out), "-min-analyses int")
	assert.NotContains(t, string(out), "help requested")
}

// buildMaterial builds the command, to run it as a user does.
func buildMaterial(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the example with")
	}
	bin := filepath.Join(t.TempDir(), "material")
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	return bin
}

// messagesAPI is a local stand-in for the Anthropic Messages API, for the
// real SDK to talk to: it answers each analyst from the property table,
// and the judge with composite. Its refuse function, if any, may answer
// with an error status instead; it is given who asks ("judge", or the
// analyst's family) and which of their requests this is, from 1.
type messagesAPI struct {
	*httptest.Server
	t      *testing.T
	refuse func(who string, n int) (status int)
	hold   func(r *http.Request, who string) // if set, called before answering
	mu     sync.Mutex
	calls  map[string]int
}

func newMessagesAPI(t *testing.T, refuse func(who string, n int) int) *messagesAPI {
	return startMessagesAPI(t, &messagesAPI{t: t, refuse: refuse, calls: map[string]int{}})
}

// newHoldingAPI is a messagesAPI that calls hold before answering.
func newHoldingAPI(t *testing.T, hold func(r *http.Request, who string)) *messagesAPI {
	return startMessagesAPI(t, &messagesAPI{t: t, hold: hold, calls: map[string]int{}})
}

func startMessagesAPI(t *testing.T, api *messagesAPI) *messagesAPI {
	api.Server = httptest.NewServer(http.HandlerFunc(api.serve))
	t.Cleanup(api.Close)
	return api
}

// Calls returns how many requests who made; "*" counts everyone's.
func (api *messagesAPI) Calls(who string) int {
	api.mu.Lock()
	defer api.mu.Unlock()
	return api.calls[who]
}

// request is what the SDK sends, as far as the stand-in reads it.
type request struct {
	Model  string `json:"model"`
	System []struct {
		Text string `json:"text"`
	} `json:"system"`
	Messages []struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	} `json:"messages"`
}

func (api *messagesAPI) serve(w http.ResponseWriter, r *http.Request) {
	var req request
	if r.URL.Path != "/v1/messages" || r.Header.Get("X-Api-Key") != "test-key" {
		http.Error(w, "unexpected request", http.StatusBadRequest)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.System) == 0 || len(req.Messages) == 0 {
		http.Error(w, fmt.Sprintf("undecodable request: %v", err), http.StatusBadRequest)
		return
	}
	system, user := req.System[0].Text, req.Messages[0].Content[0].Text
	who := "judge"
	if !strings.Contains(system, "lead materials engineer") {
		fmt.Sscanf(system, "You are a materials engineer who specialises in %s", &who)
	}
	api.mu.Lock()
	api.calls[who]++
	api.calls["*"]++
	n := api.calls[who]
	api.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if api.refuse != nil {
		if status := api.refuse(who, n); status != 0 {
			refuse(w, status)
			return
		}
	}
	if api.hold != nil {
		api.hold(r, who)
	}
	answer, err := api.answer(r.Context(), who, user)
	if err != nil {
		api.t.Errorf("%s: %v", who, err)
		refuse(w, http.StatusBadRequest)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{
		"id": "msg_test", "type": "message", "role": "assistant", "model": req.Model,
		"content":     []map[string]any{{"type": "text", "text": answer}},
		"stop_reason": "end_turn", "usage": map[string]any{"input_tokens": 100, "output_tokens": 40},
	})
}

// answer is what the model says to who, shaped as models do: prose or a
// code fence around the JSON asked for.
func (api *messagesAPI) answer(ctx context.Context, who, user string) (string, error) {
	if who == "judge" {
		return `Here is my pick: {"material": "composite", "confidence": 0.8, "rationale": "Lightest stiff option."}`, nil
	}
	var p advisor.Part
	if err := json.Unmarshal([]byte(strings.TrimPrefix(user, "Part specification:\n")), &p); err != nil {
		return "", err
	}
	analysis, err := advisor.TableAnalyst{}.Analyze(ctx, p, who)
	if err != nil {
		return "", err
	}
	a, _ := json.Marshal(analysis)
	return "```json\n" + string(a) + "\n```", nil
}

// refuse answers with the API's error for status, as the API words it; a
// 429 asks for a wait of 50 ms.
func refuse(w http.ResponseWriter, status int) {
	typ, message := "invalid_request_error", "bad request"
	switch status {
	case http.StatusTooManyRequests:
		typ, message = "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"
		w.Header().Set("Retry-After-Ms", "50")
	case 529:
		typ, message = "overloaded_error", "Overloaded"
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%q}}`, typ, message)
}

// overloaded refuses who with a 529 at their first n requests.
func overloaded(who string, n int) func(string, int) int {
	return func(w string, i int) int {
		if (who == "" || w == who) && i <= n {
			return 529
		}
		return 0
	}
}

// claudeAt returns a Claude client of the real SDK, its retries off as
// NewClaude makes them, talking to api.
func claudeAt(api *messagesAPI) *Claude {
	return NewClaude("claude-test", option.WithBaseURL(api.URL), option.WithAPIKey("test-key"))
}

// runAgainst runs the command with Claude at api, as a user would with
// ANTHROPIC_API_KEY set, on one part.
func runAgainst(t *testing.T, api *messagesAPI, part string) (string, error) {
	t.Setenv("ANTHROPIC_API_KEY", "test-key")
	t.Setenv("ANTHROPIC_BASE_URL", api.URL)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-part", part}, &out)
	return out.String(), err
}

// assertSixAnalyses checks that out shows every family's analysis.
func assertSixAnalyses(t *testing.T, out string) {
	t.Helper()
	for _, f := range advisor.Families {
		assert.Regexp(t, `(?m)^  `+f.Name+` +\S+  (ruled out|[ 0-9.]+/10)`, out, "the %s analysis is printed", f.Name)
	}
}

// assertCleanErrors checks that no error message says its status twice,
// or in fanout's words instead of the API's.
func assertCleanErrors(t *testing.T, text string) {
	t.Helper()
	assert.NotContains(t, text, "status code")
	assert.NotContains(t, text, "HTTP 5")
	assert.NotContains(t, text, "HTTP 4")
}

func TestClaudeThroughTheMessagesAPI(t *testing.T) {
	api := newMessagesAPI(t, nil)
	c := claudeAt(api)
	p, err := advisor.LoadPart("drone-arm")
	require.NoError(t, err)
	rc := advisor.Recommender{Analyst: c, Judge: c, Timeout: 10 * time.Second}
	rec, err := rc.Recommend(context.Background(), p)
	require.NoError(t, err)
	assert.Equal(t, "composite", rec.Material)
	assert.Equal(t, 0.8, rec.Confidence)
	for _, r := range rec.Analyses {
		require.NoError(t, r.Err, r.Key)
		assert.Equal(t, r.Key, r.Value.Family)
		assert.Equal(t, fanout.Cost{Tokens: 140}, r.Cost, "each analyst reports its tokens")
		assert.Equal(t, 1, api.Calls(r.Key))
	}
	assert.Equal(t, 1, api.Calls("judge"))
	assert.Equal(t, fanout.Cost{Tokens: 140}, rec.Judgement.Cost, "the judge reports its tokens")
	assert.Equal(t, fanout.Cost{Tokens: 7 * 140}, rec.Cost())
}

func TestAJudgeOverloadedOnceStillGivesAVerdict(t *testing.T) {
	api := newMessagesAPI(t, overloaded("judge", 1))
	out, err := runAgainst(t, api, "drone-arm")
	require.NoError(t, err)
	assertSixAnalyses(t, out)
	assert.Contains(t, out, "-> COMPOSITE (confidence 0.80): Lightest stiff option.")
	assert.Regexp(t, `judging \S+ \(2 attempts\)`, out)
	assert.Contains(t, out, "tokens: 840 for the analyses, 140 for the judge")
	assert.Equal(t, 2, api.Calls("judge"), "the judge was asked again")
}

func TestAJudgeAlwaysOverloadedLosesNoAnalysis(t *testing.T) {
	api := newMessagesAPI(t, overloaded("judge", 100))
	out, err := runAgainst(t, api, "drone-arm")
	want := "material: no verdict for the drone arm: the judge failed after 4 attempts: claude: 529 overloaded_error: Overloaded"
	require.EqualError(t, err, want)
	assert.Equal(t, 3, exitStatus(err), "the analyses are something to show")
	assertSixAnalyses(t, out)
	assert.Contains(t, out, "  -> "+want+"\n")
	assert.Regexp(t, `judging \S+ \(4 attempts\)`, out)
	assert.Contains(t, out, "tokens: 840 for the analyses\n")
	assert.Equal(t, advisor.DefaultMaxAttempts, api.Calls("judge"), "the judge was tried as often as the analysts may be")
	assertCleanErrors(t, out+err.Error())
}

func TestNoJudgeIsAskedWhenEveryAnalystFails(t *testing.T) {
	api := newMessagesAPI(t, func(who string, _ int) int {
		if who == "judge" {
			return 0
		}
		return 529
	})
	out, err := runAgainst(t, api, "gate-hinge")
	want := "material: no verdict for the gate hinge: 0 of 6 analyses succeeded, 3 needed to judge " +
		"(failed: metal, polymer, ceramic, composite, elastomer, wood)"
	require.EqualError(t, err, want)
	assert.Equal(t, 1, exitStatus(err), "nothing to show")
	var tooFew *advisor.TooFewAnalysesError
	require.ErrorAs(t, err, &tooFew)
	assert.Zero(t, api.Calls("judge"), "the server never saw the judge's request")
	assert.Contains(t, out, "a verdict needs 3 of the 6 analyses")
	assert.Contains(t, out, "  -> "+want+"\n")
	assert.Contains(t, out, "the judge was not asked")
	for _, f := range advisor.Families {
		assert.Contains(t, out, fmt.Sprintf("  %-9s", f.Name))
		assert.Equal(t, advisor.DefaultMaxAttempts, api.Calls(f.Name), f.Name)
	}
	assert.Equal(t, 6, strings.Count(out, "error: claude: 529 overloaded_error: Overloaded (4 attempts)\n"))
	assertCleanErrors(t, out+err.Error())
}

func TestTooFewAnalysesAreShownWithoutAVerdict(t *testing.T) {
	// Only metal and composite answer.
	api := newMessagesAPI(t, func(who string, _ int) int {
		if who == "judge" || who == "metal" || who == "composite" {
			return 0
		}
		return http.StatusBadRequest
	})
	out, err := runAgainst(t, api, "drone-arm")
	require.EqualError(t, err, "material: no verdict for the drone arm: 2 of 6 analyses succeeded, 3 needed to judge "+
		"(failed: polymer, ceramic, elastomer, wood)")
	assert.Equal(t, 3, exitStatus(err), "two analyses are something to show")
	assert.Zero(t, api.Calls("judge"))
	assert.Contains(t, out, "  metal  ")
	assert.Contains(t, out, "error: claude: 400 invalid_request_error: bad request\n", "a bad request is tried once")
}

func TestAnAnalystOutlastsA429ThenA529(t *testing.T) {
	// metal is refused twice, first for its rate, then for an overload.
	refuse := func(who string, n int) int {
		switch {
		case who != "metal":
			return 0
		case n == 1:
			return http.StatusTooManyRequests
		case n == 2:
			return 529
		}
		return 0
	}
	p, err := advisor.LoadPart("gate-hinge")
	require.NoError(t, err)

	t.Run("under the default policy", func(t *testing.T) {
		api := newMessagesAPI(t, refuse)
		c := claudeAt(api)
		rec, err := advisor.Recommender{Analyst: c, Judge: c, Timeout: 10 * time.Second}.Recommend(context.Background(), p)
		require.NoError(t, err)
		metal := rec.Analyses[0]
		require.Equal(t, "metal", metal.Key)
		require.NoError(t, metal.Err)
		assert.Equal(t, 3, metal.Attempts)
		assert.Equal(t, 3, api.Calls("metal"))
		assert.GreaterOrEqual(t, metal.Elapsed, 50*time.Millisecond, "the 429's retry-after-ms was waited")
		assert.Equal(t, "composite", rec.Material)
	})

	t.Run("with 2 attempts, as before, the analysis is lost", func(t *testing.T) {
		api := newMessagesAPI(t, refuse)
		c := claudeAt(api)
		rc := advisor.Recommender{Analyst: c, Judge: c, Timeout: 10 * time.Second, Retry: fanout.RetryPolicy{MaxAttempts: 2}}
		rec, err := rc.Recommend(context.Background(), p)
		require.NoError(t, err, "five analyses are enough to judge")
		assert.EqualError(t, rec.Analyses[0].Err, "claude: 529 overloaded_error: Overloaded")
		assert.Equal(t, 2, api.Calls("metal"))
	})
}

func TestACancelledRunAsksAboutNoMoreParts(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// Every analyst waits for the run to end; the last to arrive ends it.
	var mu sync.Mutex
	arrived := 0
	api := newHoldingAPI(t, func(r *http.Request, who string) {
		mu.Lock()
		arrived++
		if arrived == len(advisor.Families) {
			cancel(errors.New("stopped by the test"))
		}
		mu.Unlock()
		<-r.Context().Done()
	})
	t.Setenv("ANTHROPIC_API_KEY", "test-key")
	t.Setenv("ANTHROPIC_BASE_URL", api.URL)
	var out bytes.Buffer
	err := run(ctx, nil, &out)
	require.Error(t, err)
	assert.ErrorContains(t, err, "material: stopped before the drone-arm: stopped by the test")
	assert.Equal(t, 1, exitStatus(err), "not one analysis to show")
	assert.Equal(t, 1, strings.Count(out.String(), "\n== "), "only the first part is shown:\n%s", out.String())
	assert.Contains(t, out.String(), "== door seal")
	assert.Equal(t, 6, strings.Count(out.String(), "stopped by the test"), "each analysis says why it failed")
	assert.Zero(t, api.Calls("judge"))
	assert.Equal(t, len(advisor.Families), api.Calls("*"), "no analyst of a later part was asked")
}

func TestCtrlCStopsTheRunAndShowsWhatItHad(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGINT to send on Windows")
	}
	bin := buildMaterial(t)
	// Every analyst of the first part waits for the request to end.
	allIn := make(chan struct{})
	var mu sync.Mutex
	arrived := 0
	api := newHoldingAPI(t, func(r *http.Request, who string) {
		mu.Lock()
		if arrived++; arrived == len(advisor.Families) {
			close(allIn)
		}
		mu.Unlock()
		<-r.Context().Done()
	})
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "ANTHROPIC_API_KEY=test-key", "ANTHROPIC_BASE_URL="+api.URL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	<-allIn
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err := cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	assert.Equal(t, 1, exit.ExitCode(), "not one analysis to show")
	assert.Equal(t, 1, strings.Count(stdout.String(), "\n== "), "only the first part:\n%s", &stdout)
	assert.Equal(t, 6, strings.Count(stdout.String(), "interrupt"), "each analysis says why it failed:\n%s", &stdout)
	assert.Contains(t, stderr.String(), "material: stopped before the drone-arm: interrupt")
	assert.Zero(t, api.Calls("judge"))
	assert.Equal(t, len(advisor.Families), api.Calls("*"))
}

func TestDecodeJSON(t *testing.T) {
	var v advisor.Verdict
	require.NoError(t, decodeJSON("Sure!\n```json\n{\"material\": \"wood\"}\n```", &v))
	assert.Equal(t, "wood", v.Material)
	assert.ErrorContains(t, decodeJSON("no idea", &v), "no JSON object")
}
