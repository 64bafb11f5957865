package fanoutopenai

import "github.com/openai/openai-go/v3"

// Prices are a model's prices in US dollars per million tokens, as
// OpenAI's pricing page lists them. Costs are reported in cents.
type Prices struct {
	Input       float64 // per million input (prompt) tokens
	CachedInput float64 // per million input tokens read from the prompt cache; zero means Input
	Output      float64 // per million output tokens, reasoning tokens included
}

// batchDiscount is what the Batch API charges, as a fraction of the
// synchronous price.
const batchDiscount = 0.5

// usage is what one call used, whichever API served it.
type usage struct {
	input, cached, output, total int64
}

func chatUsage(u openai.CompletionUsage) usage {
	return usage{
		input:  u.PromptTokens,
		cached: u.PromptTokensDetails.CachedTokens,
		output: u.CompletionTokens,
		total:  u.TotalTokens,
	}
}

// cents is the price of u.
func (p Prices) cents(u usage) float64 {
	cached := p.CachedInput
	if cached == 0 {
		cached = p.Input
	}
	dollars := float64(u.input-u.cached)*p.Input + float64(u.cached)*cached + float64(u.output)*p.Output
	return dollars / 1e6 * 100
}
