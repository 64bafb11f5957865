package fanoutdebug

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gofanout/fanout"
)

// Looking a run up must not write into the spare room of the ring of
// finished runs, where what it wrote would stay, out of the page's
// reach and of the garbage collector's.
func TestLookupLeavesTheRingsAsTheyWere(t *testing.T) {
	p := New(WithHistory(50))
	obs := p.Observer("spare")
	top := []fanout.Task[int]{fanout.NewTask("top", func(context.Context) (int, error) { return 1, nil })}
	for range 60 {
		_, _ = fanout.Run(t.Context(), top, fanout.WithObserver(obs))
	}
	outer := []fanout.Task[int]{fanout.NewTask("outer", func(ctx context.Context) (int, error) {
		for range 5 {
			_, _ = fanout.Run(ctx, []fanout.Task[int]{fanout.NewTask("in", func(context.Context) (int, error) { return 1, nil })},
				fanout.WithObserver(obs))
		}
		return 1, nil
	})}
	_, _ = fanout.Run(t.Context(), outer, fanout.WithObserver(obs))
	vals := p.finished.vals
	spare := vals[len(vals):cap(vals)]
	if len(spare) == 0 {
		t.Skip("the ring has no spare room to write into")
	}
	p.Run(1)
	written := 0
	for _, r := range spare {
		if r != nil {
			written++
		}
	}
	assert.Zero(t, written, "runs written past the end of the ring")
}
