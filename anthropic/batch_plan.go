package fanoutanthropic

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/packages/param"
)

// batchPlan is one batch to create: the requests, and where each comes
// from in RunBatch's input.
type batchPlan struct {
	index    []int // input position of each request
	requests []anthropic.MessageBatchNewParamsRequest
}

// envelope is the JSON around a batch's requests: {"requests":[...]}.
const envelope = len(`{"requests":[]}`)

// planBatches checks reqs and cuts them, in input order, into batches of
// at most maxRequests requests and maxBytes bytes of JSON.
func planBatches(reqs []BatchRequest, maxRequests, maxBytes int) ([]*batchPlan, error) {
	ids, err := customIDs(reqs)
	if err != nil {
		return nil, err
	}
	var plans []*batchPlan
	cur, size := &batchPlan{}, envelope
	for i, r := range reqs {
		req, n, err := batchRequest(ids[i], r)
		if err != nil {
			return nil, err
		}
		if envelope+n > maxBytes {
			return nil, fmt.Errorf("fanoutanthropic: request %q is %d bytes of JSON, more than a batch of %d bytes holds", r.Key, n, maxBytes)
		}
		if len(cur.index) == maxRequests || size+n > maxBytes {
			plans = append(plans, cur)
			cur, size = &batchPlan{}, envelope
		}
		cur.index = append(cur.index, i)
		cur.requests = append(cur.requests, req)
		size += n
	}
	if len(cur.index) > 0 {
		plans = append(plans, cur)
	}
	return plans, nil
}

// batchRequest makes the batch form of r, and measures its JSON (with the
// comma that separates it from the next).
func batchRequest(id string, r BatchRequest) (anthropic.MessageBatchNewParamsRequest, int, error) {
	raw, err := json.Marshal(r.Params)
	if err != nil {
		return anthropic.MessageBatchNewParamsRequest{}, 0, fmt.Errorf("fanoutanthropic: request %q: %w", r.Key, err)
	}
	// A batch request takes the Messages API's parameters as they are:
	// passing their JSON through keeps every field, present and future.
	req := anthropic.MessageBatchNewParamsRequest{
		CustomID: id,
		Params:   param.Override[anthropic.MessageBatchNewParamsRequestParams](json.RawMessage(raw)),
	}
	data, err := json.Marshal(req)
	if err != nil {
		return req, 0, fmt.Errorf("fanoutanthropic: request %q: %w", r.Key, err)
	}
	return req, len(data) + 1, nil
}

var customIDPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// customIDs checks the keys and gives each request its custom_id: the key
// itself when it is a valid id, otherwise the key with every other
// character replaced by "_", cut to 48 bytes, and its input position:
// "my key/7" at position 3 becomes "my_key_7-3". Ids are unique.
func customIDs(reqs []BatchRequest) ([]string, error) {
	ids := make([]string, len(reqs))
	taken := make(map[string]int, len(reqs)) // id → input position
	seen := make(map[string]int, len(reqs))  // key → input position
	for i, r := range reqs {
		if r.Key == "" {
			return nil, fmt.Errorf("fanoutanthropic: request %d has an empty key", i)
		}
		if j, dup := seen[r.Key]; dup {
			return nil, fmt.Errorf("fanoutanthropic: duplicate key %q (requests %d and %d)", r.Key, j, i)
		}
		seen[r.Key] = i
		if customIDPattern.MatchString(r.Key) {
			ids[i], taken[r.Key] = r.Key, i
		}
	}
	for i, r := range reqs {
		if ids[i] != "" {
			continue
		}
		base := sanitize(r.Key) + "-" + strconv.Itoa(i)
		id := base
		for n := 2; ; n++ {
			if _, used := taken[id]; !used {
				break
			}
			id = base + "-" + strconv.Itoa(n)
		}
		ids[i], taken[id] = id, i
	}
	return ids, nil
}

func sanitize(key string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '_'
	}, key)
	return s[:min(len(s), 48)]
}
