package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// FakeBatches is the Message Batches API on 127.0.0.1, for -batch
// offline: the real SDK talks to it as it would to Anthropic's, through
// the four endpoints RunBatch uses (create, poll, cancel, results).
//
// Each request is answered by the lexicon scorer with seeded noise, as one
// sample of the offline classifier is, or ends errored or expired for a
// seeded share of them. As on the real API, a batch stays in_progress, all
// of its requests counted as processing, until the whole batch has ended;
// it takes a request 1/PerSecond of a second; a cancelled batch ends at
// the next poll with its unprocessed requests canceled; and its results
// come back in an order of their own, to be matched by custom_id.
type FakeBatches struct {
	Noise      float64 // standard deviation of the noise on each request's score
	Seed       uint64
	ErrorRate  float64 // share of requests that end errored (api_error)
	ExpireRate float64 // share of requests that end expired
	PerSecond  float64 // requests a batch processes per second

	srv       *http.Server
	transport *http.Transport
	url       string
	wg        sync.WaitGroup

	mu      sync.Mutex
	batches map[string]*fakeBatch
	created []int // requests per batch, in order of creation
}

type fakeBatch struct {
	id       string
	created  time.Time
	done     time.Time // when processing ends, unless cancelled first
	cancel   time.Time // when a cancel came; zero if none
	requests []fakeRequest
}

// fakeRequest is one request of a batch, and the result decided for it
// when the batch was created.
type fakeRequest struct {
	customID string
	result   string // the JSON of the "result" field of its line
	outcome  string // succeeded, errored or expired
}

// Start serves f on a free port of 127.0.0.1 until Close.
func (f *FakeBatches) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f.batches = map[string]*fakeBatch{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages/batches", f.create)
	mux.HandleFunc("GET /v1/messages/batches/{id}", f.get)
	mux.HandleFunc("POST /v1/messages/batches/{id}/cancel", f.cancelBatch)
	mux.HandleFunc("GET /v1/messages/batches/{id}/results", f.results)
	f.srv = &http.Server{Handler: authorized(mux), ReadHeaderTimeout: 5 * time.Second}
	f.transport = &http.Transport{}
	f.url = "http://" + ln.Addr().String()
	f.wg.Go(func() { _ = f.srv.Serve(ln) })
	return nil
}

// Close stops the server and closes the client's idle connections.
func (f *FakeBatches) Close() {
	_ = f.srv.Close()
	f.transport.CloseIdleConnections()
	f.wg.Wait()
}

// Addr is the host:port the fake serves on.
func (f *FakeBatches) Addr() string { return strings.TrimPrefix(f.url, "http://") }

// Client is the real SDK pointed at the fake, whatever ANTHROPIC_API_KEY
// and ANTHROPIC_BASE_URL say.
func (f *FakeBatches) Client(opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(f.url), option.WithAPIKey("offline"),
		option.WithHTTPClient(&http.Client{Transport: f.transport}),
	}, opts...)...)
}

// Created returns the number of requests of each batch created so far.
func (f *FakeBatches) Created() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.created...)
}

// Canceled returns the ids of the batches a cancel was asked for, sorted.
func (f *FakeBatches) Canceled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id, b := range f.batches {
		if !b.cancel.IsZero() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") == "" {
			writeAPIError(w, http.StatusUnauthorized, "authentication_error", "x-api-key header is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// batchLine is a request of a batch as the SDK sends it.
type batchLine struct {
	CustomID string `json:"custom_id"`
	Params   struct {
		Model     string          `json:"model"`
		MaxTokens int64           `json:"max_tokens"`
		System    json.RawMessage `json:"system"`
		Messages  []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	} `json:"params"`
}

// create answers POST /v1/messages/batches.
func (f *FakeBatches) create(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Requests []batchLine `json:"requests"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Requests) == 0 {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "requests: Field required")
		return
	}
	now := time.Now()
	b := &fakeBatch{created: now, requests: make([]fakeRequest, len(body.Requests))}
	for i, line := range body.Requests {
		if len(line.Params.Messages) == 0 {
			writeAPIError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("requests.%d.params.messages: Field required", i))
			return
		}
		b.requests[i] = f.decide(line)
	}
	b.done = now.Add(f.processing(len(b.requests)))
	f.mu.Lock()
	b.id = fmt.Sprintf("msgbatch_%02d", len(f.created)+1)
	f.batches[b.id] = b
	f.created = append(f.created, len(b.requests))
	resp := f.batchJSON(b, now)
	f.mu.Unlock()
	writeJSON(w, resp)
}

// decide gives a request its result: errored, expired, or the label the
// noisy lexicon gives its text, seeded by its custom_id.
func (f *FakeBatches) decide(line batchLine) fakeRequest {
	h := fnv.New64a()
	io.WriteString(h, line.CustomID)
	rnd := rand.New(rand.NewPCG(f.Seed, h.Sum64()))
	req := fakeRequest{customID: line.CustomID}
	switch u := rnd.Float64(); {
	case u < f.ErrorRate:
		req.outcome = "errored"
		req.result = `{"type":"errored","error":{"type":"error","error":{"type":"api_error","message":"Internal server error"}}}`
		return req
	case u < f.ErrorRate+f.ExpireRate:
		req.outcome, req.result = "expired", `{"type":"expired"}`
		return req
	}
	system, text := blocksText(line.Params.System), blocksText(line.Params.Messages[0].Content)
	label := labelOf(Score(text) + rnd.NormFloat64()*f.Noise)
	usage := fmt.Sprintf(`{"input_tokens":%d,"output_tokens":%d}`, 8+(len(system)+len(text)+3)/4, min(2, line.Params.MaxTokens))
	msg := fmt.Sprintf(`{"id":"msg_%s","type":"message","role":"assistant","model":%q,"content":[{"type":"text","text":%q}],`+
		`"stop_reason":"end_turn","stop_sequence":null,"usage":%s}`, line.CustomID, line.Params.Model, label, usage)
	req.outcome, req.result = "succeeded", `{"type":"succeeded","message":`+msg+`}`
	return req
}

// processing is how long a batch of n requests takes.
func (f *FakeBatches) processing(n int) time.Duration {
	if f.PerSecond <= 0 {
		return 0
	}
	return time.Duration(float64(n) / f.PerSecond * float64(time.Second))
}

// blocksText is the text of a system prompt or a message's content, given
// as a string or as text blocks.
func blocksText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var blocks []struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &blocks)
	var b strings.Builder
	for _, block := range blocks {
		b.WriteString(block.Text)
	}
	return b.String()
}

// get answers a poll, GET /v1/messages/batches/{id}.
func (f *FakeBatches) get(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.batches[r.PathValue("id")]
	var resp string
	if ok {
		resp = f.batchJSON(b, time.Now())
	}
	f.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, "not_found_error", "batch not found")
		return
	}
	writeJSON(w, resp)
}

// cancelBatch answers POST /v1/messages/batches/{id}/cancel: the batch is
// canceling until the next poll, and then ended.
func (f *FakeBatches) cancelBatch(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.batches[r.PathValue("id")]
	var resp string
	if ok {
		now := time.Now()
		if b.cancel.IsZero() && now.Before(b.done) {
			b.cancel = now
		}
		resp = f.batchJSON(b, now)
	}
	f.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, "not_found_error", "batch not found")
		return
	}
	writeJSON(w, resp)
}

// results answers GET /v1/messages/batches/{id}/results with one JSONL
// line per request, shuffled: the API does not promise the input order.
func (f *FakeBatches) results(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.batches[r.PathValue("id")]
	ended := ok && f.ended(b, time.Now())
	f.mu.Unlock()
	switch {
	case !ok:
		writeAPIError(w, http.StatusNotFound, "not_found_error", "batch not found")
		return
	case !ended:
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "batch "+b.id+" is still in progress")
		return
	}
	order := rand.New(rand.NewPCG(f.Seed, uint64(len(b.requests)))).Perm(len(b.requests))
	w.Header().Set("Content-Type", "application/x-jsonl")
	for _, i := range order {
		req := b.requests[i]
		result := req.result
		if f.canceledRequest(b, i) {
			result = `{"type":"canceled"}`
		}
		fmt.Fprintf(w, "{\"custom_id\":%q,\"result\":%s}\n", req.customID, result)
	}
}

// ended reports whether b has ended by now: processed, or cancelled and
// polled since. f.mu is held.
func (f *FakeBatches) ended(b *fakeBatch, now time.Time) bool {
	return !now.Before(b.done) || !b.cancel.IsZero() && now.After(b.cancel)
}

// canceledRequest reports whether the i-th request of b was still
// unprocessed when the batch was cancelled: requests are processed in
// input order, at PerSecond.
func (f *FakeBatches) canceledRequest(b *fakeBatch, i int) bool {
	if b.cancel.IsZero() {
		return false
	}
	return f.processing(i+1) > b.cancel.Sub(b.created)
}

// batchJSON is b as the API describes it at now. f.mu is held.
func (f *FakeBatches) batchJSON(b *fakeBatch, now time.Time) string {
	status, endedAt, cancelAt, resultsURL := "in_progress", "null", "null", "null"
	var counts struct{ processing, succeeded, errored, canceled, expired int }
	if !b.cancel.IsZero() {
		status, cancelAt = "canceling", stamp(b.cancel)
	}
	if f.ended(b, now) {
		status, endedAt = "ended", stamp(now)
		resultsURL = fmt.Sprintf("%q", f.url+"/v1/messages/batches/"+b.id+"/results")
		for i, req := range b.requests {
			switch {
			case f.canceledRequest(b, i):
				counts.canceled++
			case req.outcome == "errored":
				counts.errored++
			case req.outcome == "expired":
				counts.expired++
			default:
				counts.succeeded++
			}
		}
	} else {
		counts.processing = len(b.requests) // the API counts the others at the end only
	}
	return fmt.Sprintf(`{"id":%q,"type":"message_batch","processing_status":%q,`+
		`"request_counts":{"processing":%d,"succeeded":%d,"errored":%d,"canceled":%d,"expired":%d},`+
		`"created_at":%s,"expires_at":%s,"ended_at":%s,"cancel_initiated_at":%s,"archived_at":null,"results_url":%s}`,
		b.id, status, counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired,
		stamp(b.created), stamp(b.created.Add(24*time.Hour)), endedAt, cancelAt, resultsURL)
}

func stamp(t time.Time) string { return `"` + t.UTC().Format(time.RFC3339Nano) + `"` }

func writeJSON(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, body)
}

func writeAPIError(w http.ResponseWriter, status int, kind, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%q}}`, kind, message)
}
