// Package claude is what the examples share of calling Claude through the
// official Go SDK: one message in, its text out, with the tokens it used
// reported to fanout and its errors given the meaning fanout's retry reads.
package claude

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/anthropics/anthropic-sdk-go"

	"github.com/gofanout/fanout"
)

// Text sends one request and returns the text of the answer. It reports
// the tokens the call used through fanout.Spend, and returns errors as
// APIError does.
func Text(ctx context.Context, client *anthropic.Client, params anthropic.MessageNewParams) (string, error) {
	msg, err := client.Messages.New(ctx, params)
	if err != nil {
		return "", APIError(err)
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

// APIError keeps what fanout's retry needs from an API error: the
// Retry-After of a 429 or 529, and no retry of a request the API refused
// for good (a 400 or 401).
func APIError(err error) error {
	var apiErr *anthropic.Error
	if errors.As(err, &apiErr) && apiErr.Response != nil {
		if herr := fanout.CheckResponse(apiErr.Response); herr != nil {
			return fmt.Errorf("claude: %w (%w)", herr, err)
		}
	}
	return fmt.Errorf("claude: %w", err)
}
