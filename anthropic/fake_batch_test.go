package fanoutanthropic_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The Message Batches API of fakeAPI: a batch ends after batchPolls polls
// (or at the first poll after a cancel), and its results say what each
// request's text asks for.

type fakeBatch struct {
	id       string
	requests []batchLine
	polls    int
	canceled bool
}

type batchLine struct {
	CustomID string         `json:"custom_id"`
	Params   map[string]any `json:"params"`
}

// createBatch answers POST /v1/messages/batches.
func (f *fakeAPI) createBatch(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Requests []batchLine `json:"requests"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Requests) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "requests: Field required")
		return
	}
	f.mu.Lock()
	f.hits["batch:create"]++
	hit := f.hits["batch:create"]
	f.mu.Unlock()
	if f.fail != nil {
		if status, kind, h := f.fail("batch:create", hit); status != 0 {
			for k, v := range h {
				w.Header()[k] = v
			}
			writeError(w, status, kind, errorMessage(kind))
			return
		}
	}
	f.mu.Lock()
	b := &fakeBatch{id: fmt.Sprintf("msgbatch_%02d", len(f.created)+1), requests: body.Requests}
	f.batches[b.id] = b
	f.created = append(f.created, len(body.Requests))
	resp := f.batchJSON(b)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, resp)
}

// getBatch answers a poll: the batch ends after batchPolls polls, or at
// the first poll after a cancel.
func (f *fakeAPI) getBatch(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.batches[r.PathValue("id")]
	if ok {
		b.polls++
	}
	var resp string
	if ok {
		resp = f.batchJSON(b)
	}
	f.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found_error", "batch not found")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, resp)
}

func (f *fakeAPI) cancelBatch(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.batches[r.PathValue("id")]
	var resp string
	if ok {
		b.canceled = true
		f.canceled = append(f.canceled, b.id)
		resp = f.batchJSON(b)
	}
	f.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found_error", "batch not found")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, resp)
}

func (f *fakeAPI) ended(b *fakeBatch) bool {
	return (f.batchPolls > 0 && b.polls >= f.batchPolls) || (b.canceled && b.polls > 0)
}

func (f *fakeAPI) batchJSON(b *fakeBatch) string {
	status, endedAt := "in_progress", "null"
	switch {
	case f.ended(b):
		status, endedAt = "ended", `"2026-11-26T12:00:00Z"`
	case b.canceled:
		status = "canceling"
	}
	return fmt.Sprintf(`{"id":%q,"type":"message_batch","processing_status":%q,`+
		`"request_counts":{"processing":0,"succeeded":0,"errored":0,"canceled":0,"expired":0},`+
		`"created_at":"2026-11-26T11:00:00Z","expires_at":"2026-11-27T11:00:00Z","ended_at":%s,`+
		`"cancel_initiated_at":null,"archived_at":null,"results_url":null}`, b.id, status, endedAt)
}

// batchResults answers with one JSONL line per request: its outcome is
// named in its text ("#errored", "#expired", "#canceled"), otherwise it
// succeeded; in a canceled batch every request is canceled.
func (f *fakeAPI) batchResults(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.batches[r.PathValue("id")]
	f.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found_error", "batch not found")
		return
	}
	w.Header().Set("Content-Type", "application/x-jsonl")
	for _, req := range b.requests {
		var msgs []fakeMessage
		raw, _ := json.Marshal(req.Params["messages"])
		json.Unmarshal(raw, &msgs)
		text := ""
		if len(msgs) > 0 {
			text = msgs[0].text()
		}
		var result string
		switch {
		case b.canceled || strings.Contains(text, "#canceled"):
			result = `{"type":"canceled"}`
		case strings.Contains(text, "#expired"):
			result = `{"type":"expired"}`
		case strings.Contains(text, "#errored"):
			result = `{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"},"request_id":"req_b"}}`
		default:
			key := msgs[0].key()
			maxTokens, _ := req.Params["max_tokens"].(float64)
			output := min(f.output, int(maxTokens))
			result = `{"type":"succeeded","message":` + messageJSON(key, f.answer(key), msgs[0].tokens(), output) + `}`
		}
		fmt.Fprintf(w, "{\"custom_id\":%q,\"result\":%s}\n", req.CustomID, result)
	}
}
