package fanoutanthropic

import (
	"encoding/json"

	"github.com/anthropics/anthropic-sdk-go"
)

// Prices are what a model costs, in US dollars per million tokens, as the
// pricing page lists them. Given with [WithPrices], they turn each call's
// usage into the cents that [Message] reports with fanout.Spend, and
// [RunBatch] into its Results' Cost, at half price.
type Prices struct {
	Input  float64 // uncached input tokens
	Output float64 // output tokens
	// CacheWrite prices the input tokens written to the prompt cache;
	// zero means 1.25 × Input, the price of the 5-minute cache.
	CacheWrite float64
	// CacheRead prices the input tokens read from the prompt cache; zero
	// means 0.1 × Input.
	CacheRead float64
}

// cents prices u, multiplied by discount (1, or 0.5 for a batch).
func (p Prices) cents(u anthropic.Usage, discount float64) float64 {
	write, read := p.CacheWrite, p.CacheRead
	if write == 0 {
		write = 1.25 * p.Input
	}
	if read == 0 {
		read = 0.1 * p.Input
	}
	dollars := float64(u.InputTokens)*p.Input + float64(u.OutputTokens)*p.Output +
		float64(u.CacheCreationInputTokens)*write + float64(u.CacheReadInputTokens)*read
	return dollars / 1e6 * 100 * discount
}

func (p Prices) valid() bool {
	return p.Input >= 0 && p.Output >= 0 && p.CacheWrite >= 0 && p.CacheRead >= 0
}

// RateLimitedTokens is the default token count of a call's usage, the
// count [Message] reports with fanout.Spend and settles with
// fanout.Settle: uncached input, plus input written to the cache, plus
// output. These are the tokens the API's rate limits charge (input tokens
// per minute and output tokens per minute); input read from the cache is
// left out, since it does not count toward the input limit. A token
// limiter charged Task.Tokens before the call is thus settled in the
// units the server counts. Use [WithTokenCount] to count otherwise, and
// give Task.Tokens in the same units.
func RateLimitedTokens(u anthropic.Usage) int {
	return int(u.InputTokens + u.CacheCreationInputTokens + u.OutputTokens)
}

// Estimate returns a rough count of the tokens a request will use, for
// Task.Tokens, in the units of [RateLimitedTokens]: about one token for
// every four bytes of text (system prompt, messages, tool definitions),
// 1 600 for an image, the JSON size over four for any other block, plus
// MaxTokens for the answer, which is what the API reserves against the
// output limit when the call starts. It reads params only: about 30 ns
// for a prompt of one text block (tools and other blocks are marshalled to
// JSON, which costs more); the Messages API's count_tokens endpoint counts
// exactly, at the price of a call. The estimate need not be exact:
// [Message] settles it against the usage of the answer.
func Estimate(params anthropic.MessageNewParams) int {
	n := int(params.MaxTokens)
	for _, s := range params.System {
		n += textTokens(s.Text)
	}
	for _, m := range params.Messages {
		n += 4 // the role and the turn's framing
		for _, block := range m.Content {
			n += blockTokens(block)
		}
	}
	for _, tool := range params.Tools {
		n += jsonTokens(tool)
	}
	return n
}

// imageTokens is what the API charges at most for one image: about
// (width × height) / 750 tokens, for images it scales to 1.15 megapixels.
const imageTokens = 1600

func blockTokens(b anthropic.ContentBlockParamUnion) int {
	switch {
	case b.OfText != nil:
		return textTokens(b.OfText.Text)
	case b.OfImage != nil:
		return imageTokens
	}
	return jsonTokens(b)
}

func textTokens(s string) int { return (len(s) + 3) / 4 }

func jsonTokens(v any) int {
	data, err := json.Marshal(v)
	if err != nil {
		return 0
	}
	return textTokens(string(data))
}
