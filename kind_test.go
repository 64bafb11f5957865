package fanout_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/gofanout/fanout"
)

func TestErrorKind(t *testing.T) {
	failFast := &fanout.TaskError{Key: "first", Err: &fanout.PanicError{Value: "bug"}}
	tests := []struct {
		name string
		give error
		want string
	}{
		{"success", nil, ""},
		{"skipped by the budget", fmt.Errorf("%w: %w", fanout.ErrSkipped, fanout.ErrBudgetExceeded), "budget"},
		{"skipped after the run timed out", fmt.Errorf("%w: %w", fanout.ErrSkipped, fanout.ErrRunTimeout), "skipped"},
		{"skipped after fail-fast", fmt.Errorf("%w: %w", fanout.ErrSkipped, failFast), "skipped"},
		{"cut by the run's timeout", fmt.Errorf("%w: %w", fanout.ErrRunTimeout, context.DeadlineExceeded), "run_timeout"},
		{"a retry wait cut by the run's timeout", fmt.Errorf("%w; last attempt: %w", fanout.ErrRunTimeout, fanout.ErrTaskTimeout), "run_timeout"},
		{"cut by fail-fast after a panic", fmt.Errorf("%w: %w", failFast, context.Canceled), "canceled"},
		{"cut by an early decision", fmt.Errorf("%w: %w", fanout.ErrStopped, context.Canceled), "canceled"},
		{"the caller cancelled", context.Canceled, "canceled"},
		{"ran past its own timeout", fmt.Errorf("%w: %w", fanout.ErrTaskTimeout, context.DeadlineExceeded), "timeout"},
		{"panicked", &fanout.PanicError{Value: "bug"}, "panic"},
		{"its own error", fmt.Errorf("call: %w", &fanout.HTTPError{StatusCode: 400, Status: "400 Bad Request"}), "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, fanout.ErrorKind(tt.give))
		})
	}
}

// TestErrorKindOfARun checks the kinds of the errors a run itself makes.
func TestErrorKindOfARun(t *testing.T) {
	hang := func(key string) fanout.Task[int] {
		return fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		}}
	}
	later := fanout.Task[int]{Key: "later", Do: func(context.Context) (int, error) { return 1, nil }}
	tests := []struct {
		name  string
		tasks []fanout.Task[int]
		opts  []fanout.Option
		want  map[string]string
	}{
		{
			name: "fail-fast after a panic",
			tasks: []fanout.Task[int]{
				{Key: "boom", Do: func(context.Context) (int, error) { time.Sleep(time.Second); panic("bug") }},
				hang("hang"), later,
			},
			opts: []fanout.Option{fanout.WithFailFast(), fanout.WithLimit(2)},
			want: map[string]string{"boom": "panic", "hang": "canceled", "later": "skipped"},
		},
		{
			name:  "the run's timeout",
			tasks: []fanout.Task[int]{hang("hang"), later},
			opts:  []fanout.Option{fanout.WithTimeout(time.Second), fanout.WithLimit(1)},
			want:  map[string]string{"hang": "run_timeout", "later": "skipped"},
		},
		{
			name:  "a task's timeout",
			tasks: []fanout.Task[int]{hang("hang"), later},
			opts:  []fanout.Option{fanout.WithTaskTimeout(time.Second)},
			want:  map[string]string{"hang": "timeout", "later": ""},
		},
		{
			name: "the budget",
			tasks: []fanout.Task[int]{{Key: "spend", Do: func(ctx context.Context) (int, error) {
				fanout.Spend(ctx, fanout.Cost{Tokens: 9})
				return 1, nil
			}}, later},
			opts: []fanout.Option{fanout.WithBudget(fanout.Cost{Tokens: 5}), fanout.WithLimit(1)},
			want: map[string]string{"spend": "", "later": "budget"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rs, _ := fanout.Run(context.Background(), tt.tasks, tt.opts...)
				got := make(map[string]string)
				for _, r := range rs.All() {
					got[r.Key] = fanout.ErrorKind(r.Err)
				}
				assert.Equal(t, tt.want, got)
			})
		})
	}
}
