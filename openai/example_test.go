package fanoutopenai_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/gofanout/fanout"
	fanoutopenai "github.com/gofanout/fanout/openai"
)

// Three questions at once, each a one-line task. Tokyo's first answer is a
// 429 that asks to wait 100 ms: fanout waits that long (and so does
// everyone sharing limits), then tries again. Every key reports its usage
// and cost.
func ExampleChat() {
	api := startFakeAPI() // a stand-in for api.openai.com on 127.0.0.1
	defer api.Close()
	api.script("Tokyo", reply{status: 429, code: "rate_limit_exceeded", typ: "requests",
		message: "Rate limit reached.", header: map[string]string{"retry-after-ms": "100"}})
	client := openai.NewClient(
		option.WithBaseURL(api.srv.URL+"/v1/"), // the default is https://api.openai.com/v1/
		option.WithAPIKey("test"),
		option.WithHTTPClient(api.srv.Client()),
	)

	limits := fanoutopenai.NewLimits()
	prices := fanoutopenai.Prices{Input: 2.50, Output: 10} // dollars per million tokens
	var tasks []fanout.Task[*openai.ChatCompletion]
	for _, city := range []string{"Paris", "Tokyo", "Lima"} {
		params := openai.ChatCompletionNewParams{
			Model:               openai.ChatModelGPT5_4Mini,
			Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(city + " in one day: what to see?")},
			MaxCompletionTokens: openai.Int(1000),
		}
		tasks = append(tasks, fanout.Task[*openai.ChatCompletion]{
			Key:    city,
			Tokens: 1010, // as OpenAI counts a request: its prompt plus max_completion_tokens
			Do:     fanoutopenai.Chat(client, params, fanoutopenai.WithLimits(limits), fanoutopenai.WithPrices(prices)),
		})
	}
	rs, err := fanout.Run(context.Background(), tasks,
		fanout.WithLimit(8),
		fanout.WithRateLimit(limits),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range rs.All() {
		fmt.Printf("%s: %q in %d attempt(s), %d tokens, %.3f¢\n",
			r.Key, r.Value.Choices[0].Message.Content, r.Attempts, r.Cost.Tokens, r.Cost.Cents)
	}
	// Output:
	// Paris: "answer to Paris" in 1 attempt(s), 608 tokens, 0.602¢
	// Tokyo: "answer to Tokyo" in 2 attempt(s), 608 tokens, 0.602¢
	// Lima: "answer to Lima" in 1 attempt(s), 608 tokens, 0.602¢
}

// A batch of three requests at half price. One is refused by the API; its
// error says whether sending it again can help.
func ExampleRunBatch() {
	api := startFakeAPI()
	defer api.Close()
	api.with(func() { api.batchFail["Lima"] = badRequest() })
	client := openai.NewClient(option.WithBaseURL(api.srv.URL+"/v1/"), option.WithAPIKey("test"),
		option.WithHTTPClient(api.srv.Client()))

	var reqs []fanoutopenai.BatchRequest
	for _, city := range []string{"Paris", "Tokyo", "Lima"} {
		reqs = append(reqs, fanoutopenai.BatchRequest{Key: city, Params: openai.ChatCompletionNewParams{
			Model:               openai.ChatModelGPT5_4Mini,
			Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(city + " in one day: what to see?")},
			MaxCompletionTokens: openai.Int(1000),
		}})
	}
	rs, _ := fanoutopenai.RunBatch(context.Background(), client, reqs,
		fanoutopenai.WithPrices(fanoutopenai.Prices{Input: 2.50, Output: 10}),
		fanoutopenai.WithPollInterval(time.Millisecond, 10*time.Millisecond), // for the fake; keep the default, 5 s to 1 min, for real batches
	)
	for _, r := range rs.All() {
		if r.Err != nil {
			fmt.Printf("%s: %v (retry: %v)\n", r.Key, r.Err, fanout.Retryable(r.Err))
			continue
		}
		fmt.Printf("%s: %q, %.3f¢\n", r.Key, r.Value.Choices[0].Message.Content, r.Cost.Cents)
	}
	// Output:
	// Paris: "batch answer to Paris", 0.301¢
	// Tokyo: "batch answer to Tokyo", 0.301¢
	// Lima: openai: 400 invalid_value: Invalid value for 'temperature'. (retry: false)
}

// Classify reads what the server meant. This 429 is an exhausted quota,
// which no wait can fix; this 503 asks to wait 2 s.
func ExampleClassify() {
	quota := &openai.Error{StatusCode: 429, Code: "insufficient_quota", Message: "You exceeded your current quota."}
	busy := &openai.Error{StatusCode: 503, Type: "server_error", Message: "The engine is currently overloaded.",
		Response: &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": {"2"}}}}
	for _, sdkErr := range []error{quota, busy} {
		err := fanoutopenai.Classify(sdkErr)
		var e *fanoutopenai.APIError
		errors.As(err, &e)
		fmt.Printf("%v\n  retry: %v, after %v\n", err, fanout.Retryable(err), e.RetryAfter())
	}
	// Output:
	// openai: 429 insufficient_quota: You exceeded your current quota.
	//   retry: false, after 0s
	// openai: 503 server_error: The engine is currently overloaded.
	//   retry: true, after 2s
}
