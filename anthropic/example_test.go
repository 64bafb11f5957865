package fanoutanthropic_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// oneWord answers "Describe CITY in one word." as a model might.
var oneWord = map[string]string{"Lisbon": "Luminous.", "Oslo": "Crisp.", "Quito": "Lofty."}

func describe(city string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.ModelClaudeHaiku4_5,
		MaxTokens: 16,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Describe " + city + " in one word."))},
	}
}

// Three calls in parallel, each a one-line task: the SDK's retries off,
// errors classified for WithRetry, usage spent and settled, and every
// response's rate-limit headers fed to the Limits the run waits on.
func ExampleMessage() {
	api := newFakeAPI() // the Messages API on 127.0.0.1, for the example
	defer api.Close()
	api.answer = func(prompt string) string { return oneWord[strings.Fields(prompt)[1]] }
	client := anthropic.NewClient(option.WithBaseURL(api.srv.URL), option.WithAPIKey("test"))

	limits := &fanoutanthropic.Limits{} // share it between every run on the same API key
	prices := fanoutanthropic.WithPrices(fanoutanthropic.Prices{Input: 1, Output: 5})
	var tasks []fanout.Task[*anthropic.Message]
	for _, city := range []string{"Lisbon", "Oslo", "Quito"} {
		params := describe(city)
		tasks = append(tasks, fanout.Task[*anthropic.Message]{
			Key:    city,
			Tokens: fanoutanthropic.Estimate(params),
			Do:     fanoutanthropic.Message(client, params, fanoutanthropic.WithLimits(limits), prices),
		})
	}
	results, err := fanout.Run(context.Background(), tasks,
		fanout.WithRateLimit(limits), fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results.All() {
		fmt.Printf("%s: %s (%d tokens)\n", r.Key, r.Value.Content[0].Text, r.Cost.Tokens)
	}
	fmt.Println("total:", results.Cost())
	// Output:
	// Lisbon: Luminous. (23 tokens)
	// Oslo: Crisp. (23 tokens)
	// Quito: Lofty. (23 tokens)
	// total: 69 tokens, 0.03¢
}

// The same calls through the Message Batches API: half the price, answers
// within 24 hours, keyed like a run's.
func ExampleRunBatch() {
	api := newFakeAPI() // the Message Batches API on 127.0.0.1, for the example
	defer api.Close()
	api.answer = func(prompt string) string { return oneWord[strings.Fields(prompt)[1]] }
	client := anthropic.NewClient(option.WithBaseURL(api.srv.URL), option.WithAPIKey("test"))

	var reqs []fanoutanthropic.BatchRequest
	for _, city := range []string{"Lisbon", "Oslo", "Quito"} {
		reqs = append(reqs, fanoutanthropic.BatchRequest{Key: city, Params: describe(city)})
	}
	results, err := fanoutanthropic.RunBatch(context.Background(), client, reqs,
		fanoutanthropic.WithPrices(fanoutanthropic.Prices{Input: 1, Output: 5}),
		quickPolls) // for the example; by default the first poll is after 5 s
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results.All() {
		fmt.Printf("%s: %s\n", r.Key, r.Value.Content[0].Text)
	}
	fmt.Println("total:", results.Cost())
	// Output:
	// Lisbon: Luminous.
	// Oslo: Crisp.
	// Quito: Lofty.
	// total: 69 tokens, 0.01¢
}
