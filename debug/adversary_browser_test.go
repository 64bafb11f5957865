package fanoutdebug_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// injected counts what a payload written as HTML would have added to the
// page: elements the page never makes, and scripts beyond its own.
const injected = `(() => document.querySelectorAll('img, svg, iframe, object, embed, b, [onerror], [onload]').length +
	document.scripts.length - 1)()`

func TestBrowserShowsHostileStringsAsText(t *testing.T) {
	bctx := browser(t, t.Context())
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	srv, _ := hostile(t)

	t.Run("the overview", func(t *testing.T) {
		require.NoError(t, chromedp.Do(ctx,
			chromedp.Navigate(srv.URL+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#runs tr[data-run]`)),
			chromedp.WaitVisible(chromedp.CSS(`#fleets table`)),
		))
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](injected))
		require.NoError(t, err)
		assert.Zero(t, n)
		name, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#runs td[data-f="name"]').textContent`))
		require.NoError(t, err)
		assert.Equal(t, payloads[0], name)
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.textContent`))
		require.NoError(t, err)
		for _, s := range []string{payloads[1], payloads[2], payloads[3], payloads[4], payloads[5],
			"fleet report panicked: " + payloads[0]} {
			assert.Contains(t, text, s, "shown as it is")
		}
	})
	t.Run("a run's page", func(t *testing.T) {
		require.NoError(t, chromedp.Do(ctx,
			chromedp.Navigate(srv.URL+"/run?id=1"),
			chromedp.WaitVisible(chromedp.CSS(`#failures tr[data-key]`)),
		))
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](injected))
		require.NoError(t, err)
		assert.Zero(t, n)
		cells, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#failures tr[data-key]')]
			.map((tr) => tr.dataset.key + '|' + tr.querySelector('td[data-f="key"]').textContent + '|' +
				tr.querySelector('td[data-f="error"]').textContent)`))
		require.NoError(t, err)
		var want []string
		for _, s := range payloads {
			want = append(want, strings.Repeat(s+"|", 3)[:3*len(s)+2])
		}
		sort.Strings(want)
		sort.Strings(cells)
		assert.Equal(t, want, cells, "each key and error as text, in its cell")
		title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.title`))
		require.NoError(t, err)
		assert.Equal(t, "fanout #1 "+payloads[0], title)
	})
}
