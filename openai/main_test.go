package fanoutopenai_test

import (
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// params is a small request for key: the fake charges it 4 prompt tokens
// plus 100 for max_completion_tokens, and reports 4 + 60 used.
func params(key string) openai.ChatCompletionNewParams {
	return sizedParams(key, 16, 100)
}

// sizedParams is a request for key whose prompt is promptBytes long (a
// token per 4 bytes, at the fake) and that may answer in maxOut tokens.
func sizedParams(key string, promptBytes, maxOut int) openai.ChatCompletionNewParams {
	prompt := key + " " + strings.Repeat(".", max(promptBytes-len(key)-1, 0))
	return openai.ChatCompletionNewParams{
		Model:               "gpt-test",
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		MaxCompletionTokens: openai.Int(int64(maxOut)),
	}
}
