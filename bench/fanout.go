package bench

import (
	"context"

	"github.com/gofanout/fanout"
)

// prepareFanout builds the task list once, as a caller that fans out the
// same keys repeatedly would, and calls fanout.Run per run.
func prepareFanout(s Scenario) *Prepared {
	keys := Keys(s.N)
	tasks := make([]fanout.Task[int], s.N)
	for i := range tasks {
		tasks[i] = fanout.Task[int]{Key: keys[i], Do: func(ctx context.Context) (int, error) {
			return s.Body.Do(ctx, i)
		}}
	}
	opts := []fanout.Option{fanout.WithLimit(s.L)}
	if s.Timeout {
		opts = append(opts, fanout.WithTaskTimeout(TaskTimeout))
	}
	var last *fanout.Results[int]
	return &Prepared{
		Run: func(ctx context.Context) error {
			rs, err := fanout.Run(ctx, tasks, opts...)
			last = rs
			return err
		},
		Check: func() error { return checkKeyed(last.Values(), last.Errs(), s.N) },
	}
}

// prepareFanoutMap calls fanout.Map, which builds the tasks and their
// keys on every call: the cost of the shortest code, comparable with
// conc's iter.Map.
func prepareFanoutMap(s Scenario) *Prepared {
	inputs := Indexes(s.N)
	opts := []fanout.Option{fanout.WithLimit(s.L)}
	if s.Timeout {
		opts = append(opts, fanout.WithTaskTimeout(TaskTimeout))
	}
	var last *fanout.Results[int]
	return &Prepared{
		Run: func(ctx context.Context) error {
			rs, err := fanout.Map(ctx, inputs, s.Body.Do, opts...)
			last = rs
			return err
		},
		Check: func() error { return checkKeyed(last.Values(), last.Errs(), s.N) },
	}
}
