package main

import (
	"context"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/gofanout/fanout/examples/internal/claude"
)

// Claude classifies with the Anthropic Messages API, through the official
// Go SDK. This is a minimal call of its own: the example needs one short
// completion per sample and nothing else.
type Claude struct {
	client anthropic.Client
	model  anthropic.Model
}

const systemPrompt = "You label the sentiment of a short customer comment. " +
	"Answer with exactly one word: positive, negative or neutral."

// NewClaude returns a Claude classifier of model. The SDK's own retries are
// off, since the fan-out retries, with a rate limiter shared by every call;
// opts come after, so a test may point the client at a local server.
func NewClaude(model string, opts ...option.RequestOption) *Claude {
	opts = append([]option.RequestOption{option.WithMaxRetries(0)}, opts...)
	return &Claude{client: anthropic.NewClient(opts...), model: anthropic.Model(model)}
}

// Classify asks for one sample and reports the tokens it used through
// fanout.Spend.
func (c *Claude) Classify(ctx context.Context, q Query) (string, error) {
	return claude.Text(ctx, &c.client, sampleParams(c.model, q.Item.Text))
}

// sampleParams is the request of one sample of text: one word, at
// temperature 1 so that samples may differ. -batch sends the same.
func sampleParams(model anthropic.Model, text string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:       model,
		MaxTokens:   5,
		Temperature: anthropic.Float(1),
		System:      []anthropic.TextBlockParam{{Text: systemPrompt}},
		Messages:    []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(text))},
	}
}

// Name describes the classifier for the summary.
func (c *Claude) Name() string { return "Claude " + string(c.model) + " via the Messages API" }
