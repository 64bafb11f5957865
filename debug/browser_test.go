package fanoutdebug_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// The browser test drives headless Chromium (Debian's chromium package,
// which .ci/run installs) against the page while a real run goes. It
// writes its screenshots to $FANOUT_ARTIFACTS, or to a temporary folder;
// README's docs/debug.png is its run-live.png:
//
//	FANOUT_ARTIFACTS=/tmp/shots go test -run TestBrowser . && cp /tmp/shots/run-live.png ../docs/debug.png

// chromium returns the browser to drive, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("FANOUT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (.ci/run installs Debian's chromium package; FANOUT_CHROMIUM names another)")
	return ""
}

// browser starts a headless Chromium with a fresh profile, for the test.
func browser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return bctx
}

func artifacts(t *testing.T) string {
	if dir := os.Getenv("FANOUT_ARTIFACTS"); dir != "" {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		return dir
	}
	return t.TempDir()
}

// liveRun is a run of 30 documents, 5 at once, whose attempts each wait
// for a token the test hands out: the test sets its pace. doc-07 always
// fails; doc-13 and doc-21 fail their first try.
type liveRun struct {
	gate chan struct{}
	done chan *fanout.Results[int]
}

func startLiveRun(ctx context.Context, p *fanoutdebug.Page) *liveRun {
	lr := &liveRun{gate: make(chan struct{}, 100), done: make(chan *fanout.Results[int], 1)}
	sem := fanout.NewSemaphore(8)
	lim := rate.NewLimiter(25, 3)
	p.ShowSemaphore("workers", sem)
	p.ShowLimiter("requests", lim)
	tries := make([]int, 30)
	tasks := make([]fanout.Task[int], len(tries))
	for i := range tasks {
		tasks[i] = fanout.NewTask(fmt.Sprintf("doc-%02d", i), func(ctx context.Context) (int, error) {
			select {
			case <-lr.gate:
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			}
			tries[i]++ // one attempt at a time per key
			fanout.Spend(ctx, fanout.Cost{Tokens: int64(100 + i), Cents: 0.25})
			switch {
			case i == 7:
				return 0, errors.New("upstream 503: model overloaded")
			case (i == 13 || i == 21) && tries[i] == 1:
				return 0, errors.New("429 too many requests")
			}
			return i, nil
		})
	}
	go func() {
		res, _ := fanout.Run(ctx, tasks, fanout.WithLimit(5), fanout.WithSemaphore(sem), fanout.WithRateLimit(lim),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: 150 * time.Millisecond, Jitter: -1}),
			fanout.WithObserver(p.Observer("summarize docs")))
		lr.done <- res
	}()
	return lr
}

func (lr *liveRun) release(n int) {
	for range n {
		lr.gate <- struct{}{}
	}
}

// figures are the run's numbers as the page shows them.
type figures struct {
	Done, Succeeded, Failed, Skipped, InFlight, Attempts, Retries int
	Tokens                                                        int64
	State, DoneText                                               string
}

const readFigures = `(() => {
	const v = (f) => Number(document.getElementById('v-' + f).dataset.value || -1);
	return {Done: v('done'), Succeeded: v('succeeded'), Failed: v('failed'), Skipped: v('skipped'),
		InFlight: v('in_flight'), Attempts: v('attempts'), Retries: v('retries'),
		Tokens: Number((document.getElementById('v-cost').dataset.value || '0').split(' ')[0]),
		State: document.getElementById('state').textContent,
		DoneText: document.getElementById('v-done').textContent};
})()`

func TestBrowserFollowsALiveRun(t *testing.T) {
	bctx := browser(t, t.Context())
	ctx, cancel := context.WithTimeout(bctx, 50*time.Second)
	defer cancel()
	dir := artifacts(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, png, 0o644))
		t.Logf("screenshot: %s (%d KB)", path, len(png)/1024)
	}

	p := fanoutdebug.New(fanoutdebug.WithRefresh(100 * time.Millisecond))
	mux := http.NewServeMux()
	mux.Handle("/debug/fanout/", http.StripPrefix("/debug/fanout", p))
	srv := httptest.NewServer(mux) // on 127.0.0.1
	defer srv.Close()
	runCtx, stopRun := context.WithCancel(t.Context())
	defer stopRun()
	lr := startLiveRun(runCtx, p)

	// From the list of runs to the run's own page, as a person would.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 1000),
		chromedp.Navigate(srv.URL+"/debug/fanout/"),
		chromedp.WaitVisible(chromedp.CSS(`#runs tr[data-run] td[data-f="id"] a`)),
	))
	name, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#runs tr[data-run] td[data-f="name"]').textContent`))
	require.NoError(t, err)
	assert.Equal(t, "summarize docs", name)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#runs tr[data-run] td[data-f="id"] a`)),
		chromedp.WaitVisible(chromedp.CSS(`#detail`)),
	))
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('v-in_flight').dataset.value === '5'`,
		chromedp.WithPollingTimeout(10*time.Second)))
	require.NoError(t, err, "five keys hold their slots")
	start := readPage(t, ctx)
	assert.Equal(t, 0, start.Done)
	assert.Equal(t, "running", start.State)
	assert.Equal(t, "0 / 30", start.DoneText)

	// The numbers move as the run goes.
	seen := []int{start.Done}
	for seen[len(seen)-1] < 12 || readPage(t, ctx).Failed == 0 {
		lr.release(2)
		last := seen[len(seen)-1]
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](
			fmt.Sprintf(`Number(document.getElementById('v-done').dataset.value) > %d`, last),
			chromedp.WithPollingTimeout(10*time.Second)))
		require.NoError(t, err, "the page's count of keys done went past %d", last)
		seen = append(seen, readPage(t, ctx).Done)
	}
	t.Logf("keys done, as the page showed them: %v", seen)
	require.GreaterOrEqual(t, len(seen), 4)
	assert.IsIncreasing(t, seen)
	mid := readPage(t, ctx)
	assert.Equal(t, "running", mid.State)
	assert.Equal(t, 5, mid.InFlight)
	shot("run-live.png")

	// The failures list names the failed key with its error.
	// Read in one script: the page re-renders its tables as it polls, so
	// a node found by one call may be gone by the next.
	failure, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const out = {};
		for (const td of document.querySelectorAll('#failures tr[data-key="doc-07"] td[data-f]')) out[td.dataset.f] = td.textContent;
		return out;
	})()`))
	require.NoError(t, err)
	assert.Equal(t, "upstream 503: model overloaded", failure["error"])
	assert.Equal(t, "error", failure["kind"])

	// At the end the page matches the run's Results.
	close(lr.gate)
	res := <-lr.done
	require.NotNil(t, res)
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('state').textContent === 'finished'`,
		chromedp.WithPollingTimeout(10*time.Second)))
	require.NoError(t, err)
	end := readPage(t, ctx)
	attempts, retries := 0, 0
	for _, r := range res.All() {
		attempts += r.Attempts
		retries += r.Attempts - r.Hedges - 1
	}
	assert.Equal(t, figures{
		Done: res.Len(), Succeeded: res.Succeeded(), Failed: len(res.Errs()), Skipped: 0, InFlight: 0,
		Attempts: attempts, Retries: retries, Tokens: res.Cost().Tokens,
		State: "finished", DoneText: fmt.Sprintf("%d / %d", res.Len(), res.Len()),
	}, end)
	assert.Equal(t, 1, end.Failed)
	assert.Equal(t, 4, end.Retries, "doc-07 twice, doc-13 and doc-21 once")
	shot("run-finished.png")

	// And the list of runs agrees.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/debug/fanout/"),
		chromedp.WaitVisible(chromedp.CSS(`#runs tr.done`))))
	row, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const out = {};
		for (const td of document.querySelectorAll('#runs tr[data-run] td[data-f]')) out[td.dataset.f] = td.textContent;
		return out;
	})()`))
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprint(res.Succeeded()), row["succeeded"])
	assert.Equal(t, "1", row["failed"])
	assert.Equal(t, "4", row["retries"])
	assert.Equal(t, "done", row["eta"])
	shot("overview.png")

	// An unknown run is a clear 404 in the browser too.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/debug/fanout/run?id=999")))
	body, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`body`)))
	require.NoError(t, err)
	assert.Contains(t, body, "no run 999")
}

func readPage(t *testing.T, ctx context.Context) figures {
	t.Helper()
	f, err := chromedp.Run(ctx, chromedp.Evaluate[figures](readFigures))
	require.NoError(t, err)
	return f
}
