package fanoutdebug_test

import (
	"context"
	"math"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// get serves path from p directly and returns the answer.
func get(p *fanoutdebug.Page, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec
}

func TestCostsThatAreNotNumbersDoNotBreakTheJSON(t *testing.T) {
	for _, cents := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		p := fanoutdebug.New()
		obs := p.Observer("spend")
		_, err := fanout.Run(t.Context(), []fanout.Task[int]{fanout.NewTask("odd", func(ctx context.Context) (int, error) {
			fanout.Spend(ctx, fanout.Cost{Tokens: 3, Cents: cents})
			return 1, nil
		})}, fanout.WithObserver(obs))
		require.NoError(t, err)
		for _, path := range []string{"/api", "/api/run?id=1"} {
			rec := get(p, path)
			assert.Equal(t, 200, rec.Code, "cents %v: %s: %s", cents, path, rec.Body.String())
		}
		// A later run's figures still add up.
		_, err = fanout.Run(t.Context(), []fanout.Task[int]{fanout.NewTask("fine", func(ctx context.Context) (int, error) {
			fanout.Spend(ctx, fanout.Cost{Tokens: 4, Cents: 0.5})
			return 1, nil
		})}, fanout.WithObserver(obs))
		require.NoError(t, err)
		assert.Equal(t, 200, get(p, "/api").Code, "cents %v", cents)
		d, ok := p.Run(2)
		require.True(t, ok)
		assert.Equal(t, fanoutdebug.Cost{Tokens: 4, Cents: 0.5}, d.Cost)
		assert.Equal(t, int64(7), p.Snapshot().Names[0].Cost.Tokens)
	}
}

// slotsFunc is a Slots whose InUse is f.
type slotsFunc func() int

func (f slotsFunc) Cap() int   { return 4 }
func (f slotsFunc) InUse() int { return f() }

func TestLimitsThatCannotBeReadDoNotBreakThePage(t *testing.T) {
	p := fanoutdebug.New()
	p.ShowSemaphore("fine", fanout.NewSemaphore(2))
	p.ShowSemaphore("nil semaphore", nil)
	p.ShowLimiter("nil limiter", nil)
	p.ShowLimiter("nil *rate.Limiter", (*rate.Limiter)(nil))
	p.ShowSemaphore("panics", slotsFunc(func() int { panic("closed") }))
	p.ShowLimiter("also fine", rate.NewLimiter(3, 1))

	rec := get(p, "/api")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	s := p.Snapshot()
	require.Len(t, s.Limits, 6)
	assert.Equal(t, fanoutdebug.Limit{Name: "fine", Kind: "semaphore", Cap: 2}, s.Limits[0])
	for _, l := range s.Limits[1:5] {
		assert.Contains(t, l.Note, "fanoutdebug: ", l.Name)
	}
	assert.Contains(t, s.Limits[4].Note, "closed")
	assert.Equal(t, 3.0, s.Limits[5].Rate)
}
