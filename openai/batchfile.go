package fanoutopenai

import (
	"encoding/json"
	"fmt"

	"github.com/openai/openai-go/v3"
)

// batchFile is the input file of one batch: its JSONL, and where each of
// its lines' keys sits in RunBatch's input.
type batchFile struct {
	data  []byte
	index []int          // input positions, in line order
	pos   map[string]int // custom_id -> input position
}

// batchLine is one request of a batch input file.
type batchLine struct {
	CustomID string                         `json:"custom_id"`
	Method   string                         `json:"method"`
	URL      string                         `json:"url"`
	Body     openai.ChatCompletionNewParams `json:"body"`
}

// split checks every request and packs them, in input order, into as few
// batch files as the size caps allow.
func (c *config) split(reqs []BatchRequest) ([]*batchFile, error) {
	seen := make(map[string]int, len(reqs))
	var files []*batchFile
	var cur *batchFile
	for i, r := range reqs {
		line, err := encodeLine(i, r, seen)
		if err != nil {
			return nil, err
		}
		if len(line) > c.maxBytes {
			return nil, fmt.Errorf("openai: RunBatch: request %q is %d bytes as a batch line, over the batch file limit of %d", r.Key, len(line), c.maxBytes)
		}
		if cur == nil || len(cur.index) == c.maxRequests || len(cur.data)+len(line) > c.maxBytes {
			cur = &batchFile{pos: make(map[string]int)}
			files = append(files, cur)
		}
		cur.data = append(cur.data, line...)
		cur.index = append(cur.index, i)
		cur.pos[r.Key] = i
	}
	return files, nil
}

// encodeLine checks the i-th request and returns its line, newline
// included.
func encodeLine(i int, r BatchRequest, seen map[string]int) ([]byte, error) {
	switch {
	case r.Key == "":
		return nil, fmt.Errorf("openai: RunBatch: request %d has an empty key", i)
	case r.Params.Model == "":
		return nil, fmt.Errorf("openai: RunBatch: request %q has no model", r.Key)
	case len(r.Params.Messages) == 0:
		return nil, fmt.Errorf("openai: RunBatch: request %q has no messages", r.Key)
	}
	if j, dup := seen[r.Key]; dup {
		return nil, fmt.Errorf("openai: RunBatch: duplicate key %q (requests %d and %d)", r.Key, j, i)
	}
	seen[r.Key] = i
	line, err := json.Marshal(batchLine{CustomID: r.Key, Method: "POST", URL: "/v1/chat/completions", Body: r.Params})
	if err != nil {
		return nil, fmt.Errorf("openai: RunBatch: request %q: %w", r.Key, err)
	}
	return append(line, '\n'), nil
}

// outputLine is one line of a batch's output or error file.
type outputLine struct {
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// outcome is what a line says of its request: the completion and its
// usage, or the error; ran reports whether the batch ran the request.
func (l *outputLine) outcome(batchID string) (c *openai.ChatCompletion, u usage, ran bool, err error) {
	switch {
	case l.Response != nil && l.Response.StatusCode >= 200 && l.Response.StatusCode < 300:
		c = new(openai.ChatCompletion)
		if err := json.Unmarshal(l.Response.Body, c); err != nil {
			return nil, usage{}, true, fmt.Errorf("openai: batch %s: the body of %q: %w", batchID, l.CustomID, err)
		}
		return c, chatUsage(c.Usage), true, nil
	case l.Response != nil && l.Response.StatusCode >= 300:
		return nil, usage{}, true, Classify(apiError(l.Response.StatusCode, l.Response.Body))
	case l.Error != nil && l.Error.Code == "batch_expired":
		return nil, usage{}, false, fmt.Errorf("%w: batch %s: %s", ErrBatchExpired, batchID, l.Error.Message)
	case l.Error != nil && l.Error.Code == "batch_cancelled":
		return nil, usage{}, false, fmt.Errorf("%w: batch %s: %s", ErrBatchCancelled, batchID, l.Error.Message)
	case l.Error != nil:
		return nil, usage{}, false, fmt.Errorf("openai: batch %s: %s: %s", batchID, l.Error.Code, l.Error.Message)
	}
	return nil, usage{}, false, fmt.Errorf("%w: batch %s: a line for %q without a status or an error", ErrNoResult, batchID, l.CustomID)
}

// apiError is the *openai.Error of a request the batch answered with an
// error status: {"error": {"message", "type", "code", "param"}}. It has no
// Request or Response, since no HTTP exchange of the caller's carried it.
func apiError(status int, body []byte) *openai.Error {
	e := &openai.Error{StatusCode: status}
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && len(env.Error) > 0 {
		_ = e.UnmarshalJSON(env.Error) // a body that does not parse leaves the status alone
	}
	e.StatusCode = status
	return e
}
