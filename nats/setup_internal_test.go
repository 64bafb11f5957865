package fanoutnats

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSubjectCoversIsWildcardAware(t *testing.T) {
	tests := []struct {
		give string // a stream subject or consumer filter
		want bool   // whether it covers fanout.task.>
	}{
		{give: "fanout.task.>", want: true},
		{give: "fanout.>", want: true},
		{give: ">", want: true},
		{give: "*.task.>", want: true},
		{give: "fanout.*.>", want: true},
		{give: "fanout.task.*", want: false},
		{give: "fanout.task", want: false},
		{give: "fanout.task.score.>", want: false},
		{give: "fanout.reply.>", want: false},
		{give: "other.>", want: false},
		{give: "fanout.task.*.>", want: false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, subjectCovers(tt.give, "fanout.task.>"), tt.give)
	}
}
