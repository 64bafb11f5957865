package progress_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/examples/internal/progress"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	errFlaky = errors.New("flaky")
	errBad   = errors.New("bad")
)

// second returns a task body that takes one second of fake time, then
// returns err.
func second(err error) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		time.Sleep(time.Second)
		return 1, err
	}
}

func TestCounter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One at a time, a second each: a is done at 1 s; b fails at 2 s
		// and, retried after 1 s, is done at 4 s; c fails for good at 5 s
		// and stops the run, so d is skipped.
		var bCalls atomic.Int32
		tasks := []fanout.Task[int]{
			{Key: "a", Do: second(nil)},
			{Key: "b", Do: func(ctx context.Context) (int, error) {
				if bCalls.Add(1) == 1 {
					return second(errFlaky)(ctx)
				}
				return second(nil)(ctx)
			}},
			{Key: "c", Do: second(errBad)},
			{Key: "d", Do: second(nil)},
		}
		c := progress.NewCounter(len(tasks))
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithFailFast(),
				fanout.WithObserver(c.Observer()),
				fanout.WithRetry(fanout.RetryPolicy{InitialInterval: time.Second, Jitter: -1,
					RetryIf: func(err error) bool { return errors.Is(err, errFlaky) }}))
		}()

		synctest.Wait()
		s := c.Snapshot()
		if s.Done != 0 || s.Rate() != 0 {
			t.Errorf("at start: done %d, rate %v; want 0, 0", s.Done, s.Rate())
		}
		if _, ok := s.ETA(); ok {
			t.Error("at start: an ETA with no key done")
		}

		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		s = c.Snapshot()
		want := progress.Snapshot{Total: 4, Done: 1, Calls: 1, Elapsed: 1500 * time.Millisecond}
		if s != want {
			t.Errorf("at 1.5 s: got %+v, want %+v", s, want)
		}
		if got, want := s.Rate(), 1/1.5; got != want {
			t.Errorf("at 1.5 s: rate %v, want %v", got, want)
		}
		if eta, _ := s.ETA(); eta != 4500*time.Millisecond {
			t.Errorf("at 1.5 s: ETA %v, want 4.5s (3 keys left at 1.5 s each)", eta)
		}

		<-done
		s = c.Snapshot()
		want = progress.Snapshot{Total: 4, Done: 4, Failed: 1, Skipped: 1, Calls: 4, Retries: 1,
			Elapsed: 5 * time.Second}
		if s != want {
			t.Errorf("at the end: got %+v, want %+v", s, want)
		}
		if eta, ok := s.ETA(); !ok || eta != 0 {
			t.Errorf("at the end: ETA %v, %v; want 0, true", eta, ok)
		}
	})
}

// TestCounterNested counts the keys of the outer run and the calls of the
// runs nested in its tasks.
func TestCounterNested(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := progress.NewCounter(2)
		calls := c.CallObserver()
		vote := func(ctx context.Context) (string, error) {
			samples := make([]fanout.Task[string], 3)
			for i := range samples {
				samples[i] = fanout.Task[string]{Key: string(rune('a' + i)), Do: func(ctx context.Context) (string, error) {
					select {
					case <-time.After(time.Duration(i+1) * time.Millisecond):
						return "yes", nil
					case <-ctx.Done():
						return "", context.Cause(ctx)
					}
				}}
			}
			tally, err := fanout.Gather(ctx, samples, fanout.Vote(func(s string) string { return s }),
				fanout.WithObserver(calls))
			return tally.Winner, err
		}
		tasks := []fanout.Task[string]{{Key: "x", Do: vote}, {Key: "y", Do: vote}}
		if _, err := fanout.Run(t.Context(), tasks, fanout.WithObserver(c.Observer())); err != nil {
			t.Fatal(err)
		}
		// Each vote is decided after two samples; the third is cancelled,
		// which is a call all the same.
		want := progress.Snapshot{Total: 2, Done: 2, Calls: 6, Elapsed: 2 * time.Millisecond}
		if s := c.Snapshot(); s != want {
			t.Errorf("got %+v, want %+v", s, want)
		}
	})
}

func TestSnapshotStatus(t *testing.T) {
	tests := []struct {
		name string
		give progress.Snapshot
		want string
	}{
		{
			name: "no key done yet has no ETA",
			give: progress.Snapshot{Total: 4, Elapsed: time.Second},
			want: "  ✗ 0 failed  ↻ 0 retries  0 calls    0.0/s  ETA --",
		},
		{
			name: "failures are counted without the skipped keys",
			give: progress.Snapshot{Total: 4, Done: 2, Failed: 1, Calls: 3, Retries: 1, Elapsed: time.Second},
			want: "  ✗ 1 failed  ↻ 1 retries  3 calls    2.0/s  ETA 1s",
		},
		{
			name: "skipped keys are shown apart from failed ones",
			give: progress.Snapshot{Total: 4, Done: 4, Failed: 1, Skipped: 2, Calls: 2, Elapsed: 2 * time.Second},
			want: "  ✗ 1 failed  2 skipped  ↻ 0 retries  2 calls    2.0/s  ETA 0s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.give.Status())
		})
	}
}

// TestCounterStatus checks the status of a run that stops early: the key
// that failed and the key skipped because of it are told apart.
func TestCounterStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := progress.NewCounter(3)
		tasks := []fanout.Task[int]{{Key: "a", Do: second(nil)}, {Key: "b", Do: second(errBad)},
			{Key: "c", Do: second(nil)}}
		_, err := fanout.Run(t.Context(), tasks, fanout.WithLimit(1), fanout.WithFailFast(),
			fanout.WithObserver(c.Observer()))
		require.ErrorIs(t, err, errBad)
		assert.Equal(t, "  ✗ 1 failed  1 skipped  ↻ 0 retries  2 calls    1.5/s  ETA 0s", c.Snapshot().Status())
	})
}

func TestBarNotATerminal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		b := progress.New(3, &out, "demo")
		tasks := []fanout.Task[int]{{Key: "a", Do: second(nil)}, {Key: "b", Do: second(errBad)},
			{Key: "c", Do: second(nil)}}
		_, _ = fanout.Run(t.Context(), tasks, fanout.WithObserver(b.Observer()))
		if out.Len() != 0 {
			t.Errorf("drew %q while running", out.String())
		}
		b.Stop()
		want := "demo: 3/3 done, 1 failed, 0 skipped, 3 calls, 0 retries, 0 hedges in 1s (3.0/s)\n"
		if out.String() != want {
			t.Errorf("got %q, want %q", out.String(), want)
		}
	})
}

func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, tt := range []struct {
		name string
		give io.Writer
	}{{"a buffer", &bytes.Buffer{}}, {"a pipe", w}} {
		if progress.IsTerminal(tt.give) {
			t.Errorf("%s is a terminal", tt.name)
		}
	}
}

// TestCounterAddTotal counts a run whose keys are found as it goes.
func TestCounterAddTotal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		b := progress.New(0, &out, "crawl")
		g, err := fanout.NewGroup[int](t.Context(), fanout.WithObserver(b.Observer()))
		require.NoError(t, err)
		for _, k := range []string{"a", "b"} {
			b.AddTotal(1)
			require.NoError(t, g.Go(k, func(ctx context.Context) (int, error) {
				b.AddTotal(1)
				return 0, g.Go(k+"'", second(nil))
			}))
		}
		_, err = g.Wait()
		require.NoError(t, err)
		assert.Equal(t, progress.Snapshot{Total: 4, Done: 4, Calls: 4, Elapsed: time.Second}, b.Stop())
	})
}
