package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// batchTrace logs each request RunBatch makes, as an SDK middleware sees
// it: the batches created, every poll and what it said, a cancel, the
// results read. It is safe for concurrent use: RunBatch follows its
// batches at once.
type batchTrace struct {
	w     io.Writer
	start time.Time

	mu      sync.Mutex
	created int // batches created
	polls   int
}

func newBatchTrace(w io.Writer) *batchTrace { return &batchTrace{w: w, start: time.Now()} }

// maxBatchJSON bounds what the trace reads of a batch object; the results
// are streamed past it unread.
const maxBatchJSON = 1 << 20

func (t *batchTrace) middleware() option.Middleware {
	return func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		res, err := next(req)
		step := stepOf(req)
		ok, what := false, ""
		switch {
		case err != nil:
			what = err.Error()
		case res.StatusCode >= 300:
			what = strings.TrimPrefix(batchID(req)+": ", ": ") + res.Status
		case step == "results":
			ok, what = true, batchID(req)+": "+res.Status+", JSONL, each line matched to its key by custom_id"
		default:
			ok, what = true, describeBatch(res)
		}
		t.log(step, what, ok)
		return res, err
	}
}

// stepOf names the request: created, polled, canceled or results.
func stepOf(req *http.Request) string {
	path := strings.TrimSuffix(req.URL.Path, "/")
	switch {
	case req.Method == http.MethodPost && strings.HasSuffix(path, "/batches"):
		return "created"
	case req.Method == http.MethodPost && strings.HasSuffix(path, "/cancel"):
		return "canceled"
	case strings.HasSuffix(path, "/results"):
		return "results"
	}
	return "polled"
}

// batchID is the batch a request is about, read from its path
// (/v1/messages/batches/ID/...).
func batchID(req *http.Request) string {
	_, rest, _ := strings.Cut(req.URL.Path, "/batches/")
	id, _, _ := strings.Cut(rest, "/")
	return id
}

// describeBatch reads the batch object of res, leaving res's body as it
// was for the SDK: "msgbatch_01: in_progress, 5000 processing".
func describeBatch(res *http.Response) string {
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBatchJSON))
	res.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), res.Body), res.Body}
	var b anthropic.MessageBatch
	if err != nil || json.Unmarshal(body, &b) != nil {
		return res.Status
	}
	n := b.RequestCounts
	if b.ProcessingStatus != anthropic.MessageBatchProcessingStatusEnded {
		return fmt.Sprintf("%s: %s, %d processing", b.ID, b.ProcessingStatus, n.Processing)
	}
	return fmt.Sprintf("%s: ended, %d succeeded, %d errored, %d expired, %d canceled",
		b.ID, n.Succeeded, n.Errored, n.Expired, n.Canceled)
}

// log writes a line for one request; ok is whether it was answered with
// a batch.
func (t *batchTrace) log(step, what string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case step == "created" && ok:
		t.created++
	case step == "polled":
		t.polls++
	}
	fmt.Fprintf(t.w, "%7.2fs  %-8s  %s\n", time.Since(t.start).Seconds(), step, what)
}

// counts returns the batches created and the polls made.
func (t *batchTrace) counts() (created, polls int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.created, t.polls
}
