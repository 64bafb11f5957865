package latency_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout/internal/latency"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWindow(t *testing.T) {
	t.Run("an empty window reads zero", func(t *testing.T) {
		assert.Zero(t, latency.Quantile(latency.NewWindow(4).Sorted(), 0.95))
	})
	t.Run("quantiles are observed samples in rank order", func(t *testing.T) {
		w := latency.NewWindow(100)
		for _, ms := range []int{50, 10, 40, 20, 30} { // out of order
			w.Add(time.Duration(ms) * time.Millisecond)
		}
		for _, tt := range []struct {
			give float64
			want time.Duration
		}{
			{0, 10 * time.Millisecond},
			{0.5, 30 * time.Millisecond},
			{0.95, 40 * time.Millisecond}, // rank ⌊0.95·4⌋ = 3
			{0.999, 40 * time.Millisecond},
			{1, 50 * time.Millisecond},
			{1.5, 50 * time.Millisecond}, // clamped
		} {
			assert.Equal(t, tt.want, latency.Quantile(w.Sorted(), tt.give), "q=%v", tt.give)
		}
		assert.Equal(t, 5, w.Added())
	})
	t.Run("a full window forgets the oldest samples", func(t *testing.T) {
		w := latency.NewWindow(3)
		for _, d := range []time.Duration{time.Hour, time.Hour, 1, 2, 3} {
			w.Add(d)
		}
		assert.Equal(t, []time.Duration{1, 2, 3}, w.Sorted(), "the hours are gone")
		assert.Equal(t, 5, w.Added())
	})
	t.Run("a size below one panics", func(t *testing.T) {
		assert.PanicsWithValue(t, "latency: NewWindow: size must be positive", func() { latency.NewWindow(0) })
	})
}
