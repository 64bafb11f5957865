package fanout_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

func TestResultMarshalJSON(t *testing.T) {
	type point struct{ X, Y int }
	tests := []struct {
		name string
		give fanout.Result[point]
		want string
	}{
		{
			name: "a success has its value and no error",
			give: fanout.Result[point]{Key: "a", Value: point{1, 2}, Attempts: 1, Elapsed: 1500 * time.Microsecond},
			want: `{"key":"a","index":0,"value":{"X":1,"Y":2},"attempts":1,"hedges":0,"elapsed_ms":1.5,"limiter_wait_ms":0}`,
		},
		{
			name: "a zero value is still a value",
			give: fanout.Result[point]{Key: "z", Index: 3, Attempts: 1},
			want: `{"key":"z","index":3,"value":{"X":0,"Y":0},"attempts":1,"hedges":0,"elapsed_ms":0,"limiter_wait_ms":0}`,
		},
		{
			name: "a failure has its message and kind and no value",
			give: fanout.Result[point]{
				Key: "b", Index: 1, Value: point{9, 9}, Attempts: 3, Hedges: 1,
				Err:     fmt.Errorf("%w: %w", fanout.ErrTaskTimeout, context.DeadlineExceeded),
				Elapsed: 2 * time.Second, LimiterWait: 250 * time.Millisecond,
			},
			want: `{"key":"b","index":1,"error":"fanout: task timed out: context deadline exceeded","kind":"timeout",` +
				`"attempts":3,"hedges":1,"elapsed_ms":2000,"limiter_wait_ms":250}`,
		},
		{
			name: "a cost is there when the task spent",
			give: fanout.Result[point]{Key: "c", Index: 2, Attempts: 1, Cost: fanout.Cost{Tokens: 120, Cents: 0.25}},
			want: `{"key":"c","index":2,"value":{"X":0,"Y":0},"attempts":1,"hedges":0,"elapsed_ms":0,"limiter_wait_ms":0,` +
				`"cost":{"tokens":120,"cents":0.25}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.give)
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(got))
		})
	}
}

func TestResultJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		give     error
		wantIs   []error
		wantKind string
	}{
		{"success", nil, nil, ""},
		{"budget", fmt.Errorf("%w: %w", fanout.ErrSkipped, fanout.ErrBudgetExceeded), []error{fanout.ErrSkipped, fanout.ErrBudgetExceeded}, "budget"},
		{"skipped", fmt.Errorf("%w: %w", fanout.ErrSkipped, fanout.ErrStopped), []error{fanout.ErrSkipped}, "skipped"},
		{"run timeout", fanout.ErrRunTimeout, []error{fanout.ErrRunTimeout}, "run_timeout"},
		{"canceled", fmt.Errorf("%w: %w", fanout.ErrStopped, context.Canceled), []error{context.Canceled}, "canceled"},
		{"task timeout", fmt.Errorf("%w: %w", fanout.ErrTaskTimeout, context.DeadlineExceeded), []error{fanout.ErrTaskTimeout}, "timeout"},
		{"panic", &fanout.PanicError{Value: "bug"}, nil, "panic"},
		{"its own error", errors.New("backend: no such user"), nil, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := json.Marshal(fanout.Result[string]{Key: "k", Value: "v", Err: tt.give, Attempts: 2, Elapsed: 1234567 * time.Nanosecond})
			require.NoError(t, err)
			var got fanout.Result[string]
			require.NoError(t, json.Unmarshal(data, &got))

			assert.Equal(t, "k", got.Key)
			assert.Equal(t, 2, got.Attempts)
			assert.Equal(t, 1234567*time.Nanosecond, got.Elapsed)
			assert.Equal(t, tt.wantKind, fanout.ErrorKind(got.Err))
			if tt.give == nil {
				assert.NoError(t, got.Err)
				assert.Equal(t, "v", got.Value)
				return
			}
			assert.EqualError(t, got.Err, tt.give.Error())
			assert.Empty(t, got.Value)
			for _, want := range tt.wantIs {
				assert.ErrorIs(t, got.Err, want)
			}
		})
	}
	t.Run("a panic decodes to a *PanicError with its value", func(t *testing.T) {
		data, err := json.Marshal(fanout.Result[int]{Key: "k", Err: &fanout.PanicError{Value: "index out of range"}})
		require.NoError(t, err)
		var got fanout.Result[int]
		require.NoError(t, json.Unmarshal(data, &got))
		var pe *fanout.PanicError
		require.ErrorAs(t, got.Err, &pe)
		assert.Equal(t, "index out of range", pe.Value)
	})
	t.Run("an unknown kind keeps its message and matches nothing", func(t *testing.T) {
		var got fanout.Result[int]
		require.NoError(t, json.Unmarshal([]byte(`{"key":"k","error":"fanout: quota","kind":"quota"}`), &got))
		assert.EqualError(t, got.Err, "fanout: quota")
		assert.Equal(t, "error", fanout.ErrorKind(got.Err))
	})
}

// TestResultsOverHTTP has a service on 127.0.0.1 run a fan-out and send
// its results as JSON, and a client decode them.
func TestResultsOverHTTP(t *testing.T) {
	type quote struct {
		Symbol string  `json:"symbol"`
		Price  float64 `json:"price"`
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tasks := []fanout.Task[quote]{
			{Key: "acme", Do: func(ctx context.Context) (quote, error) {
				fanout.Spend(ctx, fanout.Cost{Tokens: 7})
				return quote{"ACME", 12.5}, nil
			}},
			{Key: "gone", Do: func(context.Context) (quote, error) {
				return quote{}, fanout.CheckResponse(&http.Response{StatusCode: 404, Status: "404 Not Found"})
			}},
			{Key: "slow", Do: func(ctx context.Context) (quote, error) {
				<-ctx.Done()
				return quote{}, ctx.Err()
			}},
			{Key: "buggy", Do: func(context.Context) (quote, error) { panic("nil map") }},
		}
		rs, _ := fanout.Run(r.Context(), tasks, fanout.WithTaskTimeout(time.Millisecond))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rs.All())
	}))
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	var got []fanout.Result[quote]
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))

	require.Len(t, got, 4)
	kinds := make(map[string]string)
	for i, r := range got {
		assert.Equal(t, i, r.Index)
		kinds[r.Key] = fanout.ErrorKind(r.Err)
	}
	assert.Equal(t, map[string]string{"acme": "", "gone": "error", "slow": "timeout", "buggy": "panic"}, kinds)
	assert.Equal(t, quote{"ACME", 12.5}, got[0].Value)
	assert.Equal(t, fanout.Cost{Tokens: 7}, got[0].Cost)
	assert.EqualError(t, got[1].Err, "fanout: HTTP 404 Not Found")
	assert.ErrorIs(t, got[2].Err, fanout.ErrTaskTimeout)
	assert.Equal(t, 1, got[2].Attempts)
	var pe *fanout.PanicError
	require.ErrorAs(t, got[3].Err, &pe)
	assert.Equal(t, "nil map", pe.Value)
}
