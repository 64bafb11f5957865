package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"os"
	"path/filepath"
	"strings"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/examples/internal/claude"
	"github.com/gofanout/fanout/examples/material/advisor"
)

// criteriaOf is what each specialist weighs, as the seed workflow frames it.
var criteriaOf = map[string]string{
	"metal":     "strength, weldability, corrosion resistance, cost",
	"polymer":   "moldability, weight, temperature range, UV resistance",
	"ceramic":   "hardness, brittleness, thermal resistance, machinability",
	"composite": "strength-to-weight, cost, manufacturing complexity",
	"elastomer": "flexibility, durability, chemical resistance, temperature range",
	"wood":      "availability, machinability, aesthetics, moisture sensitivity",
}

// Claude is an [advisor.Analyst] and an [advisor.Judge] backed by the
// Anthropic Messages API, through the official Go SDK. Its errors are
// [claude.Error]s, which the Recommender's retry reads.
type Claude struct {
	client anthropic.Client
	model  anthropic.Model
	image  *anthropic.ImageBlockParam // optional picture of the part
}

// NewClaude returns a Claude of model; opts come last so a test can point
// it at a local server.
//
// The SDK's own retries are off. By default it would try each call up to
// three times inside one fanout attempt, so the Recommender's MaxAttempts
// of 4 would mean up to 12 requests per call, with waits the run cannot
// see. With them off, MaxAttempts is the true bound on the requests each
// call sends, and every retry waits what the server asked, in fanout,
// where the Results count it.
func NewClaude(model string, opts ...option.RequestOption) *Claude {
	opts = append([]option.RequestOption{option.WithMaxRetries(0)}, opts...)
	return &Claude{client: anthropic.NewClient(opts...), model: anthropic.Model(model)}
}

// WithImage adds a picture of the part to every analyst's question.
func (c *Claude) WithImage(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("material: image: %w", err)
	}
	media := mime.TypeByExtension(strings.ToLower(filepath.Ext(path)))
	if media == "" {
		return fmt.Errorf("material: image %s: unknown type", path)
	}
	block := anthropic.NewImageBlockBase64(media, base64.StdEncoding.EncodeToString(data))
	c.image = block.OfImage
	return nil
}

// Analyze implements [advisor.Analyst].
func (c *Claude) Analyze(ctx context.Context, p advisor.Part, fam string) (advisor.Analysis, error) {
	spec, _ := json.Marshal(p)
	system := fmt.Sprintf("You are a materials engineer who specialises in %s materials. "+
		"Evaluate the part for %s: %s. Answer with one JSON object and nothing else: "+
		`{"suitability": 0-10, "disqualified": ["hard limit it breaks", ...], "pros": [...], "cons": [...], "summary": "one sentence"}`,
		fam, fam, criteriaOf[fam])
	content := []anthropic.ContentBlockParamUnion{anthropic.NewTextBlock("Part specification:\n" + string(spec))}
	if c.image != nil {
		content = append(content, anthropic.ContentBlockParamUnion{OfImage: c.image})
	}
	text, err := c.ask(ctx, system, content, 600)
	if err != nil {
		return advisor.Analysis{}, err
	}
	var a advisor.Analysis
	if err := decodeJSON(text, &a); err != nil {
		return advisor.Analysis{}, fmt.Errorf("material: %s analyst: %w", fam, err)
	}
	a.Family = fam
	return a, nil
}

// Judge implements [advisor.Judge]: Claude reads every analysis and picks
// one.
func (c *Claude) Judge(ctx context.Context, p advisor.Part, results []fanout.Result[advisor.Analysis]) (advisor.Verdict, error) {
	var b strings.Builder
	spec, _ := json.Marshal(p)
	fmt.Fprintf(&b, "Part specification:\n%s\n\nSpecialist analyses:\n", spec)
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(&b, "- %s: no analysis (%v)\n", r.Key, r.Err)
			continue
		}
		a, _ := json.Marshal(r.Value)
		fmt.Fprintf(&b, "- %s: %s\n", r.Key, a)
	}
	system := "You are the lead materials engineer. Compare the specialists' analyses and pick the single best " +
		"material family for the part. Answer with one JSON object and nothing else: " +
		`{"material": "family", "confidence": 0-1, "rationale": "two or three sentences"}`
	text, err := c.ask(ctx, system, []anthropic.ContentBlockParamUnion{anthropic.NewTextBlock(b.String())}, 600)
	if err != nil {
		return advisor.Verdict{}, err
	}
	var v advisor.Verdict
	if err := decodeJSON(text, &v); err != nil {
		return advisor.Verdict{}, fmt.Errorf("material: judge: %w", err)
	}
	return v, nil
}

func (c *Claude) ask(ctx context.Context, system string, content []anthropic.ContentBlockParamUnion, maxTokens int64) (string, error) {
	return claude.Text(ctx, &c.client, anthropic.MessageNewParams{
		Model:     c.model,
		MaxTokens: maxTokens,
		System:    []anthropic.TextBlockParam{{Text: system}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(content...)},
	})
}

// decodeJSON reads the first JSON object in text: models sometimes wrap
// their answer in prose or a code fence.
func decodeJSON(text string, v any) error {
	start, end := strings.Index(text, "{"), strings.LastIndex(text, "}")
	if start < 0 || end < start {
		return fmt.Errorf("no JSON object in the answer %q", text)
	}
	if err := json.Unmarshal([]byte(text[start:end+1]), v); err != nil {
		return fmt.Errorf("answer is not the JSON asked for: %w", err)
	}
	return nil
}
