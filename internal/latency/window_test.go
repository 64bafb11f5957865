package latency_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout/internal/latency"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWindow(t *testing.T) {
	t.Run("an empty window reads zero", func(t *testing.T) {
		assert.Zero(t, latency.NewWindow(4).Quantile(0.95))
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
			{1, 50 * time.Millisecond},
			{1.5, 50 * time.Millisecond}, // clamped
		} {
			assert.Equal(t, tt.want, w.Quantile(tt.give), "q=%v", tt.give)
		}
		assert.Equal(t, 5, w.Added())
		assert.Equal(t, 5, w.Len())
	})
	t.Run("a full window forgets the oldest samples", func(t *testing.T) {
		w := latency.NewWindow(3)
		for _, d := range []time.Duration{time.Hour, time.Hour, 1, 2, 3} {
			w.Add(d)
		}
		assert.Equal(t, time.Duration(3), w.Quantile(1), "the hours are gone")
		assert.Equal(t, time.Duration(1), w.Quantile(0))
		assert.Equal(t, 5, w.Added())
		assert.Equal(t, 3, w.Len())
	})
	t.Run("stays sorted through many evictions, duplicates included", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		w := latency.NewWindow(16)
		var all []time.Duration
		for range 1000 {
			d := time.Duration(rng.IntN(20)) // many equal values
			w.Add(d)
			all = append(all, d)
			last := slices.Clone(all[max(0, len(all)-16):])
			slices.Sort(last)
			for _, q := range []float64{0, 0.25, 0.5, 0.95, 1} {
				if got, want := w.Quantile(q), last[int(q*float64(len(last)-1))]; got != want {
					t.Fatalf("after %d samples, q=%v: got %v, want %v", len(all), q, got, want)
				}
			}
		}
	})
	t.Run("a size below one panics", func(t *testing.T) {
		assert.PanicsWithValue(t, "latency: NewWindow: size must be positive", func() { latency.NewWindow(0) })
	})
}
