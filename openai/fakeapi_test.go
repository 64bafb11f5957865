package fanoutopenai_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// fakeAPI is a stand-in for api.openai.com on 127.0.0.1, with what the
// tests look at behaving as the real API does: Chat Completions and
// Responses under a fixed-window budget of requests and tokens, errors as
// {"error": {"message", "type", "code", "param"}}, x-ratelimit-* headers
// on every answer, 429s with retry-after and retry-after-ms, scripted
// failures and slow tails; and the Files and Batches APIs a batch goes
// through.
//
// A request's key is the first word of its last message; its charge on
// the token budget is its prompt (a token per 4 bytes of its messages)
// plus its max_completion_tokens, as OpenAI counts it on arrival. Every
// request counts on the request budget, rejected ones too.
type fakeAPI struct {
	srv   *httptest.Server
	start time.Time

	mu           sync.Mutex
	window       time.Duration
	tokenLimit   int
	requestLimit int
	windowIndex  int64
	tokensUsed   int
	requestsUsed int
	service      func(key string) time.Duration
	cached       int64 // prompt tokens reported as cached
	scripts      map[string][]reply
	hits         map[string]int
	total        int
	tooMany      int
	cancelled    map[string]int
	arrivals     map[string]chan struct{} // closed at a key's first request

	files      map[string][]byte
	batches    map[string]*fakeBatch
	nextID     int
	batchPolls int                // polls a batch spends in_progress
	outcome    openai.BatchStatus // how batches end: completed, expired, failed or cancelled
	batchFail  map[string]reply   // per key: the error a batch answers it with
	batchDrop  map[string]bool    // per key: no line at all
	getErrors  []int              // statuses the next polls answer with
	created    []int              // requests per batch created
	cancels    []string           // batches cancelled through the API
	polls      int
}

// reply is a scripted answer to one request of a key.
type reply struct {
	status  int // 0: serve it as usual, after delay
	code    string
	typ     string
	message string
	header  map[string]string
	delay   time.Duration // before answering: a slow tail
}

func newFakeAPI(tb testing.TB) *fakeAPI {
	f := startFakeAPI()
	tb.Cleanup(f.Close)
	return f
}

// startFakeAPI starts a fake with budgets too large to matter, answering
// at once.
func startFakeAPI() *fakeAPI {
	f := &fakeAPI{
		start:        time.Now(),
		window:       time.Minute,
		tokenLimit:   1 << 30,
		requestLimit: 1 << 30,
		service:      func(string) time.Duration { return 0 },
		scripts:      map[string][]reply{},
		hits:         map[string]int{},
		cancelled:    map[string]int{},
		arrivals:     map[string]chan struct{}{},
		files:        map[string][]byte{},
		batches:      map[string]*fakeBatch{},
		batchPolls:   1,
		outcome:      openai.BatchStatusCompleted,
		batchFail:    map[string]reply{},
		batchDrop:    map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", f.chat)
	mux.HandleFunc("POST /v1/responses", f.responses)
	mux.HandleFunc("POST /v1/files", f.upload)
	mux.HandleFunc("GET /v1/files/{id}/content", f.content)
	mux.HandleFunc("POST /v1/batches", f.createBatch)
	mux.HandleFunc("GET /v1/batches/{id}", f.getBatch)
	mux.HandleFunc("POST /v1/batches/{id}/cancel", f.cancelBatch)
	f.srv = httptest.NewServer(mux)
	return f
}

func (f *fakeAPI) Close() { f.srv.Close() }

// client is the real SDK pointed at the fake.
func (f *fakeAPI) client(opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(f.srv.URL + "/v1/"),
		option.WithAPIKey("test"),
		option.WithHTTPClient(f.srv.Client()),
	}, opts...)...)
}

// setBudget sets the budgets per window, starting a fresh window now.
func (f *fakeAPI) setBudget(tokens, requests int, window time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenLimit, f.requestLimit, f.window = tokens, requests, window
	f.start, f.windowIndex, f.tokensUsed, f.requestsUsed = time.Now(), 0, 0, 0
}

func (f *fakeAPI) setService(service func(key string) time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.service = service
}

// with runs fn with f locked, to set or read its fields.
func (f *fakeAPI) with(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeAPI) script(key string, replies ...reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scripts[key] = append(f.scripts[key], replies...)
}

// stats are the fake's counts so far.
type stats struct {
	total, tooMany, maxHits int
	hits                    map[string]int
}

func (f *fakeAPI) stats() stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := stats{total: f.total, tooMany: f.tooMany, hits: map[string]int{}}
	for k, n := range f.hits {
		s.hits[k] = n
		s.maxHits = max(s.maxHits, n)
	}
	return s
}

// arrived is closed once the fake has received a request of key.
func (f *fakeAPI) arrived(key string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.arrival(key)
}

// arrival is the channel of key, made if need be. f.mu is held.
func (f *fakeAPI) arrival(key string) chan struct{} {
	ch, ok := f.arrivals[key]
	if !ok {
		ch = make(chan struct{})
		f.arrivals[key] = ch
	}
	return ch
}

func (f *fakeAPI) cancelledCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancelled[key]
}

// Replies that fail.
func serverError() reply {
	return reply{status: 500, typ: "server_error", message: "The server had an error while processing your request."}
}

func badRequest() reply {
	return reply{status: 400, typ: "invalid_request_error", code: "invalid_value", message: "Invalid value for 'temperature'."}
}

func noQuota() reply {
	return reply{status: 429, typ: "insufficient_quota", code: "insufficient_quota",
		message: "You exceeded your current quota, please check your plan and billing details."}
}

func slow(d time.Duration) reply { return reply{delay: d} }

// --- Chat Completions and Responses ---

type chatRequest struct {
	Model               string `json:"model"`
	MaxCompletionTokens int    `json:"max_completion_tokens"`
	MaxTokens           int    `json:"max_tokens"`
	Messages            []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Input json.RawMessage `json:"input"` // Responses
}

// text is the request's text: its messages' contents, or its input.
func (c *chatRequest) text() []string {
	var out []string
	add := func(raw json.RawMessage) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			out = append(out, s)
		} else {
			out = append(out, string(raw))
		}
	}
	for _, m := range c.Messages {
		add(m.Content)
	}
	if len(c.Input) > 0 {
		add(c.Input)
	}
	return out
}

// served is what the fake decided for an admitted request.
type served struct {
	key                string
	model              string
	prompt, completion int64
	cached             int64
}

func (f *fakeAPI) chat(w http.ResponseWriter, r *http.Request) {
	if s, ok := f.admit(w, r); ok {
		f.writeJSON(w, http.StatusOK, map[string]any{
			"id": "chatcmpl-" + s.key, "object": "chat.completion", "created": 1764115200, "model": s.model,
			"choices": []any{map[string]any{
				"index": 0, "finish_reason": "stop", "logprobs": nil,
				"message": map[string]any{"role": "assistant", "content": "answer to " + s.key, "refusal": nil},
			}},
			"usage": map[string]any{
				"prompt_tokens": s.prompt, "completion_tokens": s.completion, "total_tokens": s.prompt + s.completion,
				"prompt_tokens_details":     map[string]any{"cached_tokens": s.cached},
				"completion_tokens_details": map[string]any{"reasoning_tokens": 0},
			},
		})
	}
}

func (f *fakeAPI) responses(w http.ResponseWriter, r *http.Request) {
	if s, ok := f.admit(w, r); ok {
		f.writeJSON(w, http.StatusOK, map[string]any{
			"id": "resp_" + s.key, "object": "response", "created_at": 1764115200, "status": "completed", "model": s.model,
			"output": []any{map[string]any{
				"type": "message", "id": "msg_" + s.key, "status": "completed", "role": "assistant",
				"content": []any{map[string]any{"type": "output_text", "text": "answer to " + s.key, "annotations": []any{}}},
			}},
			"usage": map[string]any{
				"input_tokens": s.prompt, "output_tokens": s.completion, "total_tokens": s.prompt + s.completion,
				"input_tokens_details":  map[string]any{"cached_tokens": s.cached},
				"output_tokens_details": map[string]any{"reasoning_tokens": 0},
			},
		})
	}
}

// admit counts the request, answers it with its script or a 429 if it
// must, waits out its service time, and reports what to serve.
func (f *fakeAPI) admit(w http.ResponseWriter, r *http.Request) (served, bool) {
	body, _ := io.ReadAll(r.Body)
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		f.writeError(w, reply{status: 400, typ: "invalid_request_error", message: "We could not parse the JSON body of your request."})
		return served{}, false
	}
	text := req.text()
	key := "?"
	if len(text) > 0 {
		if words := strings.Fields(text[len(text)-1]); len(words) > 0 {
			key = words[0]
		}
	}
	prompt := int64(0)
	for _, t := range text {
		prompt += int64(len(t)+3) / 4
	}
	maxOut := int64(max(req.MaxCompletionTokens, req.MaxTokens))
	if maxOut == 0 {
		maxOut = 16
	}
	charge := int(prompt + maxOut)

	f.mu.Lock()
	f.roll()
	f.hits[key]++
	if f.hits[key] == 1 {
		close(f.arrival(key))
	}
	f.total++
	f.requestsUsed++
	var rep reply
	if s := f.scripts[key]; len(s) > 0 {
		rep, f.scripts[key] = s[0], s[1:]
	}
	if rep.status == 0 && (f.tokensUsed+charge > f.tokenLimit || f.requestsUsed > f.requestLimit) {
		rep = f.rateLimited(req.Model, charge)
	}
	if rep.status == 0 {
		f.tokensUsed += charge
	}
	if rep.status == http.StatusTooManyRequests {
		f.tooMany++
	}
	delay := rep.delay + f.service(key)
	cached := min(f.cached, prompt)
	f.mu.Unlock()

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			f.mu.Lock()
			f.cancelled[key]++
			f.mu.Unlock()
			return served{}, false
		}
	}
	if rep.status != 0 {
		f.writeError(w, rep)
		return served{}, false
	}
	return served{key: key, model: req.Model, prompt: prompt, completion: maxOut * 3 / 5, cached: cached}, true
}

// roll starts a new window if the current one has ended. f.mu is held.
func (f *fakeAPI) roll() {
	if n := int64(time.Since(f.start) / f.window); n != f.windowIndex {
		f.windowIndex, f.tokensUsed, f.requestsUsed = n, 0, 0
	}
}

// left is the time until the current window ends, rounded up to the
// millisecond, as a client must never come back early. f.mu is held.
func (f *fakeAPI) left() time.Duration {
	end := f.start.Add(time.Duration(f.windowIndex+1) * f.window)
	d := time.Until(end)
	return max((d + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond)
}

// rateLimited is the 429 of a request over budget. f.mu is held.
func (f *fakeAPI) rateLimited(model string, charge int) reply {
	left := f.left()
	kind, limit, used := "tokens per min (TPM)", f.tokenLimit, f.tokensUsed
	if f.requestsUsed > f.requestLimit {
		kind, limit, used = "requests per min (RPM)", f.requestLimit, f.requestsUsed-1
	}
	return reply{
		status: http.StatusTooManyRequests, typ: "tokens", code: "rate_limit_exceeded",
		message: fmt.Sprintf("Rate limit reached for %s in organization org-test on %s: Limit %d, Used %d, Requested %d. Please try again in %v.",
			model, kind, limit, used, charge, left),
		header: map[string]string{
			"Retry-After-Ms": strconv.FormatInt(left.Milliseconds(), 10),
			"Retry-After":    strconv.Itoa(int(math.Ceil(left.Seconds()))),
		},
	}
}

// rateHeaders sets the x-ratelimit-* headers, as of now.
func (f *fakeAPI) rateHeaders(h http.Header) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll()
	left := f.left().String()
	h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(f.requestLimit))
	h.Set("X-Ratelimit-Remaining-Requests", strconv.Itoa(max(f.requestLimit-f.requestsUsed, 0)))
	h.Set("X-Ratelimit-Reset-Requests", left)
	h.Set("X-Ratelimit-Limit-Tokens", strconv.Itoa(f.tokenLimit))
	h.Set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(max(f.tokenLimit-f.tokensUsed, 0)))
	h.Set("X-Ratelimit-Reset-Tokens", left)
}

func (f *fakeAPI) writeJSON(w http.ResponseWriter, status int, v any) {
	f.rateHeaders(w.Header())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) writeError(w http.ResponseWriter, rep reply) {
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	f.writeJSON(w, rep.status, errorBody(rep))
}

func errorBody(rep reply) map[string]any {
	var code any
	if rep.code != "" {
		code = rep.code
	}
	return map[string]any{"error": map[string]any{"message": rep.message, "type": rep.typ, "code": code, "param": nil}}
}
