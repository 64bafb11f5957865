package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/gofanout/fanout"
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

// Classify asks for one sample, at temperature 1 so that samples may
// differ, and reports the tokens it used through fanout.Spend.
func (c *Claude) Classify(ctx context.Context, q Query) (string, error) {
	msg, err := c.client.Messages.New(ctx, anthropic.MessageNewParams{
		Model:       c.model,
		MaxTokens:   5,
		Temperature: anthropic.Float(1),
		System:      []anthropic.TextBlockParam{{Text: systemPrompt}},
		Messages:    []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(q.Item.Text))},
	})
	if err != nil {
		return "", apiError(err)
	}
	fanout.Spend(ctx, fanout.Cost{Tokens: msg.Usage.InputTokens + msg.Usage.OutputTokens})
	var b strings.Builder
	for _, block := range msg.Content {
		if block.Type == "text" {
			b.WriteString(block.Text)
		}
	}
	return b.String(), nil
}

// apiError gives an API error the meaning fanout's retry reads from an
// HTTP response: the Retry-After delay of a 429 or 529, and no retry of a
// request the API refused for good (a 400 or 401).
func apiError(err error) error {
	var apiErr *anthropic.Error
	if errors.As(err, &apiErr) && apiErr.Response != nil {
		if herr := fanout.CheckResponse(apiErr.Response); herr != nil {
			return fmt.Errorf("claude: %w (%w)", herr, err)
		}
	}
	return fmt.Errorf("claude: %w", err)
}

// Name describes the classifier for the summary.
func (c *Claude) Name() string { return "Claude " + string(c.model) + " via the Messages API" }
