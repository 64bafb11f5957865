package fanoutopenai_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/openai/openai-go/v3"
)

// The Files and Batches APIs of the fake, as a batch goes through them:
// upload, create, poll (validating, in_progress, finalizing, then
// f.outcome), read the output and error files, cancel.

// fakeBatch is a batch as the fake runs it.
type fakeBatch struct {
	id, inputFileID string
	status          openai.BatchStatus
	polls           int
	lines           []batchInput
	invalid         []map[string]any // validation errors: the batch fails
	outputFileID    string
	errorFileID     string
}

type batchInput struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

func (f *fakeAPI) id(prefix string) string {
	f.nextID++
	return fmt.Sprintf("%s-%d", prefix, f.nextID)
}

func (f *fakeAPI) upload(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(64 << 20); err != nil || r.FormValue("purpose") != "batch" {
		f.writeError(w, reply{status: 400, typ: "invalid_request_error", message: "A batch file needs purpose 'batch'."})
		return
	}
	file, hdr, err := r.FormFile("file")
	if err != nil {
		f.writeError(w, reply{status: 400, typ: "invalid_request_error", message: "No file."})
		return
	}
	data, _ := io.ReadAll(file)
	f.mu.Lock()
	id := f.id("file")
	f.files[id] = data
	f.mu.Unlock()
	f.writeJSON(w, http.StatusOK, map[string]any{
		"id": id, "object": "file", "bytes": len(data), "created_at": 1764115200,
		"filename": hdr.Filename, "purpose": "batch", "status": "processed",
	})
}

func (f *fakeAPI) content(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	data, ok := f.files[r.PathValue("id")]
	f.mu.Unlock()
	if !ok {
		f.writeError(w, reply{status: 404, typ: "invalid_request_error", message: "No such File object."})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}

func (f *fakeAPI) createBatch(w http.ResponseWriter, r *http.Request) {
	var req struct {
		InputFileID      string `json:"input_file_id"`
		Endpoint         string `json:"endpoint"`
		CompletionWindow string `json:"completion_window"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	f.mu.Lock()
	data, ok := f.files[req.InputFileID]
	if !ok || req.Endpoint != "/v1/chat/completions" || req.CompletionWindow != "24h" {
		f.mu.Unlock()
		f.writeError(w, reply{status: 400, typ: "invalid_request_error", message: "Bad batch: file, endpoint or window."})
		return
	}
	b := &fakeBatch{id: f.id("batch"), inputFileID: req.InputFileID, status: openai.BatchStatusValidating}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		var in batchInput
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil || in.URL != req.Endpoint || in.Method != "POST" {
			b.invalid = append(b.invalid, map[string]any{"code": "invalid_request", "line": n, "message": "This line is not a valid request."})
		}
		b.lines = append(b.lines, in)
	}
	f.batches[b.id] = b
	f.created = append(f.created, len(b.lines))
	view := f.batchView(b)
	f.mu.Unlock()
	f.writeJSON(w, http.StatusOK, view)
}

func (f *fakeAPI) getBatch(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.polls++
	if len(f.getErrors) > 0 {
		status := f.getErrors[0]
		f.getErrors = f.getErrors[1:]
		f.mu.Unlock()
		f.writeError(w, reply{status: status, typ: "server_error", message: "The server had an error while processing your request."})
		return
	}
	b, ok := f.batches[r.PathValue("id")]
	if !ok {
		f.mu.Unlock()
		f.writeError(w, reply{status: 404, typ: "invalid_request_error", message: "No such batch."})
		return
	}
	f.advance(b)
	view := f.batchView(b)
	f.mu.Unlock()
	f.writeJSON(w, http.StatusOK, view)
}

func (f *fakeAPI) cancelBatch(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.batches[r.PathValue("id")]
	if !ok {
		f.mu.Unlock()
		f.writeError(w, reply{status: 404, typ: "invalid_request_error", message: "No such batch."})
		return
	}
	f.cancels = append(f.cancels, b.id)
	if !isFinished(b.status) {
		b.status = openai.BatchStatusCancelling
	}
	view := f.batchView(b)
	f.mu.Unlock()
	f.writeJSON(w, http.StatusOK, view)
}

func isFinished(s openai.BatchStatus) bool {
	return s == openai.BatchStatusCompleted || s == openai.BatchStatusFailed ||
		s == openai.BatchStatusExpired || s == openai.BatchStatusCancelled
}

// advance moves b one step on at a poll: validating, in_progress for
// batchPolls polls, finalizing, then f.outcome. f.mu is held.
func (f *fakeAPI) advance(b *fakeBatch) {
	b.polls++
	switch b.status {
	case openai.BatchStatusValidating:
		b.status = openai.BatchStatusInProgress
		if len(b.invalid) > 0 {
			b.status = openai.BatchStatusFailed
		}
	case openai.BatchStatusCancelling:
		f.finish(b, openai.BatchStatusCancelled, 0)
	case openai.BatchStatusInProgress:
		if b.polls <= f.batchPolls+1 {
			return
		}
		switch f.outcome {
		case openai.BatchStatusExpired:
			f.finish(b, openai.BatchStatusExpired, len(b.lines)/2)
		case openai.BatchStatusCancelled:
			f.finish(b, openai.BatchStatusCancelled, len(b.lines)/2)
		case openai.BatchStatusFailed:
			b.status = openai.BatchStatusFailed
			b.invalid = []map[string]any{{"code": "token_limit_exceeded", "message": "Enqueued token limit reached for gpt-test in organization org-test."}}
		default:
			b.status = openai.BatchStatusFinalizing
		}
	case openai.BatchStatusFinalizing:
		f.finish(b, openai.BatchStatusCompleted, len(b.lines))
	}
}

// finish ends b with status, having run its first ran requests; the others
// get batch_expired or batch_cancelled lines. f.mu is held.
func (f *fakeAPI) finish(b *fakeBatch, status openai.BatchStatus, ran int) {
	var out, errs bytes.Buffer
	enc := func(buf *bytes.Buffer, v any) { _ = json.NewEncoder(buf).Encode(v) }
	for i, in := range b.lines {
		var req chatRequest
		_ = json.Unmarshal(in.Body, &req)
		key := in.CustomID
		switch fail, failed := f.batchFail[key]; {
		case f.batchDrop[key]:
		case i >= ran:
			code := "batch_expired"
			msg := "This request could not be executed before the completion window expired."
			if status == openai.BatchStatusCancelled {
				code, msg = "batch_cancelled", "This request was cancelled before it was executed."
			}
			enc(&errs, map[string]any{"id": "batch_req_" + key, "custom_id": key, "response": nil,
				"error": map[string]any{"code": code, "message": msg}})
		case failed:
			enc(&errs, map[string]any{"id": "batch_req_" + key, "custom_id": key, "error": nil,
				"response": map[string]any{"status_code": fail.status, "request_id": "req_" + key, "body": errorBody(fail)}})
		default:
			prompt := int64(0)
			for _, t := range req.text() {
				prompt += int64(len(t)+3) / 4
			}
			completion := int64(max(req.MaxCompletionTokens, 16)) * 3 / 5
			enc(&out, map[string]any{"id": "batch_req_" + key, "custom_id": key, "error": nil,
				"response": map[string]any{"status_code": 200, "request_id": "req_" + key, "body": map[string]any{
					"id": "chatcmpl-" + key, "object": "chat.completion", "created": 1764115200, "model": req.Model,
					"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "logprobs": nil,
						"message": map[string]any{"role": "assistant", "content": "batch answer to " + key, "refusal": nil}}},
					"usage": map[string]any{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
				}}})
		}
	}
	if out.Len() > 0 {
		b.outputFileID = f.id("file")
		f.files[b.outputFileID] = out.Bytes()
	}
	if errs.Len() > 0 {
		b.errorFileID = f.id("file")
		f.files[b.errorFileID] = errs.Bytes()
	}
	b.status = status
}

// batchView is b as the API shows it. f.mu is held.
func (f *fakeAPI) batchView(b *fakeBatch) map[string]any {
	v := map[string]any{
		"id": b.id, "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": b.inputFileID,
		"completion_window": "24h", "status": b.status, "created_at": 1764115200,
		"request_counts": map[string]any{"total": len(b.lines), "completed": 0, "failed": 0},
	}
	if b.outputFileID != "" {
		v["output_file_id"] = b.outputFileID
	}
	if b.errorFileID != "" {
		v["error_file_id"] = b.errorFileID
	}
	if b.status == openai.BatchStatusFailed {
		v["errors"] = map[string]any{"object": "list", "data": b.invalid}
	}
	return v
}
