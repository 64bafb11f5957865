package fanoutanthropic_test

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
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// fakeAPI is the Messages API and the Message Batches API on 127.0.0.1,
// behaving as the real ones do where these tests look: JSON error bodies
// ({"type":"error","error":{"type":"rate_limit_error","message":...}}),
// token and request budgets enforced as token buckets that refill at a
// steady rate (the provider's algorithm), 429s with retry-after and
// retry-after-ms, anthropic-ratelimit-* headers on every answer, success
// or error, and latency that a cancelled request cuts short.
//
// A request's key is the bracketed prefix of its first message, "[k7] ...",
// or else its text; the fake counts the hits of each key, and a test may
// script the answer to any hit with fail.
type fakeAPI struct {
	srv *httptest.Server

	tokens   *bucket // nil: no token limit
	requests *bucket // nil: no request limit
	output   int     // output tokens of every answer, at most max_tokens
	// latency is how long the hit-th request of key takes to answer.
	latency func(key string, hit int) time.Duration
	// fail, if set, may answer the hit-th request of key with an error:
	// it returns the status, the error type, and headers to add; status 0
	// lets the request through.
	fail func(key string, hit int) (status int, kind string, h http.Header)
	// answer is the text of the answer to key.
	answer func(key string) string

	batchPolls int // polls before a batch ends; 0: never

	mu        sync.Mutex
	hits      map[string]int
	statuses  map[int]int
	cancelled chan string // keys whose request the client closed before the answer
	batches   map[string]*fakeBatch
	created   []int    // the size of each batch created
	canceled  []string // the ids of the batches canceled
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{
		output:     20,
		latency:    func(string, int) time.Duration { return 0 },
		answer:     func(key string) string { return "answer to " + key },
		batchPolls: 2,
		hits:       map[string]int{},
		statuses:   map[int]int{},
		cancelled:  make(chan string, 1000),
		batches:    map[string]*fakeBatch{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", f.messages)
	mux.HandleFunc("POST /v1/messages/batches", f.createBatch)
	mux.HandleFunc("GET /v1/messages/batches/{id}", f.getBatch)
	mux.HandleFunc("POST /v1/messages/batches/{id}/cancel", f.cancelBatch)
	mux.HandleFunc("GET /v1/messages/batches/{id}/results", f.batchResults)
	f.srv = httptest.NewServer(f.authorized(mux))
	return f
}

func (f *fakeAPI) Close() { f.srv.Close() }

// client is the real SDK pointed at the fake.
func (f *fakeAPI) client(opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(f.srv.URL), option.WithAPIKey("test"), option.WithHTTPClient(f.srv.Client()),
	}, opts...)...)
}

func (f *fakeAPI) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "test" {
			writeError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// messages answers POST /v1/messages.
func (f *fakeAPI) messages(w http.ResponseWriter, r *http.Request) {
	var body struct {
		MaxTokens int           `json:"max_tokens"`
		Messages  []fakeMessage `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "messages: Field required")
		return
	}
	key := body.Messages[0].key()
	input := 0
	for _, m := range body.Messages {
		input += m.tokens()
	}
	output := min(f.output, body.MaxTokens)

	f.mu.Lock()
	f.hits[key]++
	hit := f.hits[key]
	status, kind, extra := 0, "", http.Header(nil)
	if f.fail != nil {
		status, kind, extra = f.fail(key, hit)
	}
	now := time.Now()
	if status == 0 {
		status, extra = f.admit(now, input+output)
		kind = "rate_limit_error"
	}
	f.budgetHeaders(w.Header(), now)
	f.statuses[max(status, http.StatusOK)]++
	f.mu.Unlock()

	for k, v := range extra {
		w.Header()[k] = v
	}
	w.Header().Set("Request-Id", fmt.Sprintf("req_%s_%d", key, hit))
	if status != 0 {
		writeError(w, status, kind, errorMessage(kind))
		return
	}
	select {
	case <-time.After(f.latency(key, hit)):
	case <-r.Context().Done():
		f.cancelled <- key
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, messageJSON(key, f.answer(key), input, output))
}

// admit charges a request of n tokens to the budgets, or refuses it with
// a 429 and the wait until it would fit. Called with f.mu held.
func (f *fakeAPI) admit(now time.Time, n int) (int, http.Header) {
	wait := max(f.requests.shortfall(now, 1), f.tokens.shortfall(now, n))
	if wait > 0 {
		h := http.Header{}
		h.Set("Retry-After-Ms", strconv.FormatInt(wait.Milliseconds()+1, 10))
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return http.StatusTooManyRequests, h
	}
	f.requests.take(1)
	f.tokens.take(n)
	return 0, nil
}

func (f *fakeAPI) budgetHeaders(h http.Header, now time.Time) {
	f.requests.headers(h, "requests", now)
	f.tokens.headers(h, "tokens", now)
}

func (f *fakeAPI) count() (hits, tooMany, maxPerKey int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.hits {
		hits += n
		maxPerKey = max(maxPerKey, n)
	}
	return hits, f.statuses[http.StatusTooManyRequests], maxPerKey
}

func (f *fakeAPI) hitsOf(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[key]
}

// waitCancelled waits until the handlers of keys have seen their request
// cancelled, and returns the keys that did not within d.
func (f *fakeAPI) waitCancelled(d time.Duration, keys ...string) []string {
	left := map[string]bool{}
	for _, k := range keys {
		left[k] = true
	}
	timeout := time.After(d)
	for len(left) > 0 {
		select {
		case k := <-f.cancelled:
			delete(left, k)
		case <-timeout:
			var out []string
			for k := range left {
				out = append(out, k)
			}
			return out
		}
	}
	return nil
}

type fakeMessage struct {
	Content json.RawMessage `json:"content"`
}

// text is the message's text: its content as a string, or its text
// blocks.
func (m fakeMessage) text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	json.Unmarshal(m.Content, &blocks)
	var b strings.Builder
	for _, blk := range blocks {
		b.WriteString(blk.Text)
	}
	return b.String()
}

// key is the bracketed prefix of the message, "[k7] ...", or else its
// whole text.
func (m fakeMessage) key() string {
	t := m.text()
	if strings.HasPrefix(t, "[") {
		if i := strings.IndexByte(t, ']'); i > 0 {
			return t[1:i]
		}
	}
	return t
}

// tokens counts a message as the fake bills it: a token per four bytes.
func (m fakeMessage) tokens() int { return (len(m.text()) + 3) / 4 }

// bucket is a budget refilled at limit per window, continuously, up to
// limit: the token bucket the API's rate limits use.
type bucket struct {
	limit  float64
	window time.Duration
	level  float64
	at     time.Time
}

func newBucket(limit int, window time.Duration) *bucket {
	return &bucket{limit: float64(limit), window: window, level: float64(limit), at: time.Now()}
}

func (b *bucket) rate() float64 { return b.limit / b.window.Seconds() } // per second

func (b *bucket) refill(now time.Time) {
	b.level = min(b.limit, b.level+now.Sub(b.at).Seconds()*b.rate())
	b.at = now
}

// shortfall is how long until n fits; zero if it fits now.
func (b *bucket) shortfall(now time.Time, n int) time.Duration {
	if b == nil {
		return 0
	}
	b.refill(now)
	if missing := float64(n) - b.level; missing > 0 {
		return time.Duration(missing / b.rate() * float64(time.Second))
	}
	return 0
}

func (b *bucket) take(n int) {
	if b != nil {
		b.level -= float64(n)
	}
}

// headers reports b as the API does: the limit, what remains, and when it
// is full again, in RFC 3339.
func (b *bucket) headers(h http.Header, name string, now time.Time) {
	if b == nil {
		return
	}
	full := now.Add(time.Duration((b.limit - b.level) / b.rate() * float64(time.Second)))
	h.Set("Anthropic-Ratelimit-"+name+"-Limit", strconv.Itoa(int(b.limit)))
	h.Set("Anthropic-Ratelimit-"+name+"-Remaining", strconv.Itoa(int(b.level)))
	h.Set("Anthropic-Ratelimit-"+name+"-Reset", full.UTC().Format(time.RFC3339Nano))
}

func errorMessage(kind string) string {
	switch kind {
	case "rate_limit_error":
		return "Number of request tokens has exceeded your per-minute rate limit"
	case "overloaded_error":
		return "Overloaded"
	case "api_error":
		return "Internal server error"
	case "invalid_request_error":
		return "max_tokens: Field required"
	}
	return kind
}

func writeError(w http.ResponseWriter, status int, kind, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%q},"request_id":"req_err"}`, kind, message)
}

func messageJSON(key, text string, input, output int) string {
	return fmt.Sprintf(`{"id":"msg_%s","type":"message","role":"assistant","model":"claude-haiku-4-5",`+
		`"content":[{"type":"text","text":%q}],"stop_reason":"end_turn","stop_sequence":null,`+
		`"usage":{"input_tokens":%d,"output_tokens":%d,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`,
		key, text, input, output)
}

// ask is a request whose first message starts with the key, padded with
// words to about tokens input tokens as the fake counts them.
func ask(key string, tokens int) anthropic.MessageNewParams {
	text := "[" + key + "] "
	if pad := tokens*4 - len(text); pad > 0 {
		text += strings.Repeat("word ", pad/5+1)[:pad]
	}
	return anthropic.MessageNewParams{
		Model:     anthropic.Model("claude-haiku-4-5"),
		MaxTokens: 20,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(text))},
	}
}
