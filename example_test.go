package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

// lookup stands in for a slow call to another service.
func lookup(city string) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		if city == "Atlantis" {
			return 0, errors.New("no such city")
		}
		return len(city) * 1000, nil
	}
}

func ExampleRun() {
	tasks := []fanout.Task[int]{
		{Key: "paris", Do: lookup("Paris")},
		{Key: "atlantis", Do: lookup("Atlantis")},
		{Key: "tokyo", Do: lookup("Tokyo")},
	}
	results, err := fanout.Run(context.Background(), tasks,
		fanout.WithLimit(2), fanout.WithTaskTimeout(time.Second))

	// Partial results are normal: each key has its value or its error.
	for _, r := range results.All() {
		fmt.Printf("%s: %d %v\n", r.Key, r.Value, r.Err)
	}
	fmt.Println("run:", err)
	// Output:
	// paris: 5000 <nil>
	// atlantis: 0 no such city
	// tokyo: 5000 <nil>
	// run: fanout: task "atlantis": no such city
}

func ExampleStream() {
	tasks := []fanout.Task[string]{
		{Key: "fast", Do: func(ctx context.Context) (string, error) { return "first", nil }},
		{Key: "slow", Do: func(ctx context.Context) (string, error) {
			<-ctx.Done() // cancelled when the loop below breaks
			return "", ctx.Err()
		}},
	}
	seq, err := fanout.Stream(context.Background(), tasks)
	if err != nil {
		fmt.Println(err)
		return
	}
	for r := range seq {
		fmt.Println(r.Key, r.Value)
		break // enough: the slow task is cancelled and waited for
	}
	// Output:
	// fast first
}

func ExampleMap() {
	words := []string{"fan", "out", "in"}
	results, _ := fanout.Map(context.Background(), words, func(_ context.Context, w string) (string, error) {
		return strings.ToUpper(w), nil
	})
	for _, r := range results.All() {
		fmt.Println(r.Key, r.Value)
	}
	// Output:
	// 0 FAN
	// 1 OUT
	// 2 IN
}

func ExampleGather() {
	tasks := []fanout.Task[float64]{
		{Key: "eu-west", Do: func(context.Context) (float64, error) { return 12.5, nil }},
		{Key: "us-east", Do: func(context.Context) (float64, error) { return 7.5, nil }},
		{Key: "ap-south", Do: func(context.Context) (float64, error) { return 0, errors.New("unreachable") }},
	}
	total, err := fanout.Gather(context.Background(), tasks, fanout.Reduce(0.0, func(sum float64, r fanout.Result[float64]) float64 {
		return sum + r.Value
	}))
	fmt.Println(total, err)
	// Output:
	// 20 <nil>
}

func ExampleVote() {
	// Five samples of the same question; free-text answers are reduced to
	// the choice they voice before counting.
	answers := []string{"Answer: B", "b", "I think A", "B.", "B"}
	var tasks []fanout.Task[string]
	for i, a := range answers {
		tasks = append(tasks, fanout.Task[string]{
			Key: fmt.Sprint("sample", i),
			Do:  func(context.Context) (string, error) { return a, nil },
		})
	}
	pick := func(answer string) string {
		answer = strings.ToUpper(answer)
		if strings.Contains(answer, "A ") || strings.HasSuffix(answer, "A") {
			return "A"
		}
		return "B"
	}
	// WithLimit(1) makes the order, and so the early stop, reproducible.
	tally, err := fanout.Gather(context.Background(), tasks, fanout.Vote(pick), fanout.WithLimit(1))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s with %.0f of %.0f votes; decided early: %v, samples saved: %d\n",
		tally.Winner, tally.Votes, tally.Total, tally.Decided, tally.Stopped)
	// Output:
	// B with 3 of 4 votes; decided early: true, samples saved: 1
}

func ExampleCollect() {
	// The final step sees every branch at once, as an LLM asked to compare
	// the specialists' analyses would.
	tasks := []fanout.Task[int]{
		{Key: "metal", Do: func(context.Context) (int, error) { return 7, nil }},
		{Key: "polymer", Do: func(context.Context) (int, error) { return 9, nil }},
		{Key: "wood", Do: func(context.Context) (int, error) { return 4, nil }},
	}
	best, _ := fanout.Gather(context.Background(), tasks, fanout.Collect(
		func(ctx context.Context, rs []fanout.Result[int]) (string, error) {
			best := slices.MaxFunc(rs, func(a, b fanout.Result[int]) int { return a.Value - b.Value })
			return fmt.Sprintf("%s (score %d of %d branches)", best.Key, best.Value, len(rs)), nil
		}))
	fmt.Println(best)
	// Output:
	// polymer (score 9 of 3 branches)
}

func ExampleFirst() {
	tasks := []fanout.Task[string]{
		{Key: "primary", Do: func(ctx context.Context) (string, error) { <-ctx.Done(); return "", ctx.Err() }},
		{Key: "mirror", Do: func(context.Context) (string, error) { return "data", nil }},
	}
	r, _ := fanout.Gather(context.Background(), tasks, fanout.First[string]())
	fmt.Println(r.Key, r.Value)
	// Output:
	// mirror data
}

func ExampleWithRetry() {
	// A server that is overloaded twice, asking for a short pause, and
	// then answers.
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 2 {
			w.Header().Set("Retry-After-Ms", "10")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()

	get := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, fanout.CheckResponse(resp) // *HTTPError carries Retry-After
	}
	results, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "api", Do: get}},
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 5, InitialInterval: time.Millisecond}))
	r, _ := results.Get("api")
	fmt.Println(r.Value, err, "after", r.Attempts, "attempts")
	// Output:
	// 200 <nil> after 3 attempts
}

func ExampleWithRateLimit() {
	// One budget of tokens per second shared by every run that is given
	// it; each task is charged its estimated Tokens.
	tokens := rate.NewLimiter(rate.Limit(1e6), 4000)
	tasks := []fanout.Task[string]{
		{Key: "summary", Tokens: 3000, Do: func(context.Context) (string, error) { return "short", nil }},
		{Key: "title", Tokens: 200, Do: func(context.Context) (string, error) { return "Fan-out", nil }},
	}
	results, _ := fanout.Run(context.Background(), tasks, fanout.WithRateLimit(tokens))
	fmt.Println(results.Values())
	// Output:
	// map[summary:short title:Fan-out]
}

func ExampleWithHedge() {
	var calls atomic.Int32
	replica := func(ctx context.Context) (string, error) {
		if calls.Add(1) == 1 {
			<-ctx.Done() // the first call is stuck in a slow tail
			return "", ctx.Err()
		}
		return "answer", nil
	}
	results, _ := fanout.Run(context.Background(), []fanout.Task[string]{{Key: "q", Do: replica}},
		fanout.WithHedge(fanout.HedgePolicy{Delay: 10 * time.Millisecond, MaxExtra: 1}))
	r, _ := results.Get("q")
	fmt.Println(r.Value, r.Attempts, "attempts,", r.Hedges, "hedge")
	// Output:
	// answer 2 attempts, 1 hedge
}

func ExampleWithBudget() {
	var tasks []fanout.Task[int]
	for i := range 5 {
		tasks = append(tasks, fanout.Task[int]{Key: fmt.Sprint("call", i), Do: func(ctx context.Context) (int, error) {
			fanout.Spend(ctx, fanout.Cost{Tokens: 1200}) // as the API reported it
			return i, nil
		}})
	}
	results, _ := fanout.Run(context.Background(), tasks,
		fanout.WithBudget(fanout.Cost{Tokens: 3000}), fanout.WithLimit(1))
	fmt.Println("spent", results.Cost().Tokens, "tokens on", results.Succeeded(), "calls")
	for key, err := range results.Errs() {
		if errors.Is(err, fanout.ErrBudgetExceeded) {
			fmt.Println(key, "skipped")
		}
	}
	// Unordered output:
	// spent 3600 tokens on 3 calls
	// call3 skipped
	// call4 skipped
}

func ExampleWithSemaphore() {
	// One process-wide cap on calls to an API, shared by every run.
	api := fanout.NewSemaphore(4)
	outer := func(ctx context.Context) (int, error) {
		// A task may fan out again on the same semaphore: the nested run
		// borrows the slot its caller holds, so it cannot deadlock.
		rs, err := fanout.Map(ctx, []int{1, 2, 3}, func(_ context.Context, n int) (int, error) { return n * n, nil },
			fanout.WithSemaphore(api))
		if err != nil {
			return 0, err
		}
		sum := 0
		for _, v := range rs.Values() {
			sum += v
		}
		return sum, nil
	}
	var tasks []fanout.Task[int]
	for i := range 8 {
		tasks = append(tasks, fanout.Task[int]{Key: fmt.Sprint("job", i), Do: outer})
	}
	results, err := fanout.Run(context.Background(), tasks, fanout.WithSemaphore(api))
	fmt.Println(len(results.Values()), "jobs, each summing to", results.Values()["job0"], err)
	// Output:
	// 8 jobs, each summing to 14 <nil>
}

func ExampleWithObserver() {
	var retries atomic.Int32
	obs := &fanout.Observer{
		Retry: func(ctx context.Context, r fanout.RetryInfo) { retries.Add(1) },
		RunDone: func(ctx context.Context, s fanout.RunSummary) {
			fmt.Printf("%d tasks: %d ok, %d failed, %d attempts\n", s.Tasks, s.Succeeded, s.Failed, s.Attempts)
		},
	}
	var calls atomic.Int32
	flaky := func(context.Context) (int, error) {
		if calls.Add(1) == 1 {
			return 0, errors.New("hiccup")
		}
		return 1, nil
	}
	_, _ = fanout.Run(context.Background(), []fanout.Task[int]{{Key: "a", Do: flaky}},
		fanout.WithObserver(obs), fanout.WithRetry(fanout.RetryPolicy{InitialInterval: time.Millisecond}))
	fmt.Println("retries:", retries.Load())
	// Output:
	// 1 tasks: 1 ok, 0 failed, 2 attempts
	// retries: 1
}

func ExampleWithLimit() {
	var running, most atomic.Int32
	call := func(ctx context.Context) (int, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(time.Millisecond)
		return int(n), nil
	}
	var tasks []fanout.Task[int]
	for i := range 12 {
		tasks = append(tasks, fanout.Task[int]{Key: fmt.Sprint("call", i), Do: call})
	}
	results, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(3))
	fmt.Println(results.Succeeded(), "calls, at most 3 at once:", most.Load() <= 3)
	// Output:
	// 12 calls, at most 3 at once: true
}

func ExampleWithTaskTimeout() {
	tasks := []fanout.Task[string]{
		{Key: "quick", Do: func(context.Context) (string, error) { return "done", nil }},
		{Key: "stuck", Do: func(ctx context.Context) (string, error) {
			<-ctx.Done() // a call that honours its context gives up at the deadline
			return "", ctx.Err()
		}},
	}
	results, _ := fanout.Run(context.Background(), tasks, fanout.WithTaskTimeout(10*time.Millisecond))
	for _, r := range results.All() {
		fmt.Printf("%s: %q timed out: %v\n", r.Key, r.Value, errors.Is(r.Err, fanout.ErrTaskTimeout))
	}
	// Output:
	// quick: "done" timed out: false
	// stuck: "" timed out: true
}

func ExampleWithTimeout() {
	tasks := []fanout.Task[string]{
		{Key: "quick", Do: func(context.Context) (string, error) { return "done", nil }},
		{Key: "slow", Do: func(ctx context.Context) (string, error) {
			<-ctx.Done()
			return "", ctx.Err()
		}},
		{Key: "queued", Do: func(context.Context) (string, error) { return "never runs", nil }},
	}
	results, _ := fanout.Run(context.Background(), tasks,
		fanout.WithTimeout(10*time.Millisecond), fanout.WithLimit(1))
	for _, r := range results.All() {
		fmt.Printf("%s: run timed out: %v, skipped: %v\n", r.Key,
			errors.Is(r.Err, fanout.ErrRunTimeout), errors.Is(r.Err, fanout.ErrSkipped))
	}
	// Output:
	// quick: run timed out: false, skipped: false
	// slow: run timed out: true, skipped: false
	// queued: run timed out: true, skipped: true
}

func ExampleWithFailFast() {
	tasks := []fanout.Task[int]{
		{Key: "a", Do: func(context.Context) (int, error) { return 0, errors.New("bad input") }},
		{Key: "b", Do: func(context.Context) (int, error) { return 2, nil }},
	}
	results, err := fanout.Run(context.Background(), tasks, fanout.WithFailFast(), fanout.WithLimit(1))
	fmt.Println(err)
	b, _ := results.Get("b")
	fmt.Println("b skipped:", errors.Is(b.Err, fanout.ErrSkipped))
	// Output:
	// fanout: task "a": bad input
	// fanout: task "b": task skipped: task "a": bad input
	// b skipped: true
}

func ExampleWithRequestLimit() {
	// An LLM API's two quotas at once: requests per second, whatever their
	// size, and tokens per second, charged each task's Tokens.
	requests := rate.NewLimiter(50, 5)
	tokens := rate.NewLimiter(1e5, 8000)
	ask := func(answer string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return answer, nil }
	}
	tasks := []fanout.Task[string]{
		{Key: "classify", Tokens: 300, Do: ask("positive")},
		{Key: "summarise", Tokens: 6000, Do: ask("a short text")},
	}
	results, _ := fanout.Run(context.Background(), tasks,
		fanout.WithRequestLimit(requests), fanout.WithRateLimit(tokens))
	fmt.Println(results.Values())
	// Output:
	// map[classify:positive summarise:a short text]
}

func ExampleNewThrottle() {
	// One request limit shared by two runs, wrapped in a Throttle so that a
	// 429 that one run gets pauses the other as well.
	api := fanout.NewThrottle(rate.NewLimiter(100, 10))
	overloaded := func(context.Context) (string, error) {
		return "", &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: 50 * time.Millisecond}
	}
	_, err := fanout.Run(context.Background(), []fanout.Task[string]{{Key: "a", Do: overloaded}},
		fanout.WithRequestLimit(api))
	fmt.Println(err)

	results, _ := fanout.Run(context.Background(), []fanout.Task[string]{
		{Key: "b", Do: func(context.Context) (string, error) { return "ok", nil }},
	}, fanout.WithRequestLimit(api))
	b, _ := results.Get("b")
	fmt.Println(b.Value, "after the cooldown:", b.LimiterWait >= 40*time.Millisecond)
	// Output:
	// fanout: task "a": HTTP 429 Too Many Requests (retry after 50ms)
	// ok after the cooldown: true
}
