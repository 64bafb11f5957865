package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// The -batch path: every sample of every text is one request of the
// Message Batches API, sent with fanoutanthropic.RunBatch, which creates
// the batches, polls them until they end and maps each result back to its
// key; the samples of each text are then counted by fanout.Vote. A batch
// costs half the price of the Messages API and answers within 24 hours,
// but no vote stops early: every sample is sent, and paid for.

// batchAPI is the Message Batches API that -batch talks to.
type batchAPI struct {
	client anthropic.Client
	name   string                   // for the summary
	opts   []fanoutanthropic.Option // the API's own: the fake is polled faster
	close  func()
}

// openBatchAPI returns Anthropic's Message Batches API when
// ANTHROPIC_API_KEY is set (and not -offline), otherwise a FakeBatches
// started on 127.0.0.1, which close stops.
func openBatchAPI(c config) (*batchAPI, error) {
	if os.Getenv("ANTHROPIC_API_KEY") != "" && !c.offline {
		return &batchAPI{client: anthropic.NewClient(), name: "Claude " + c.model + " via the Message Batches API",
			close: func() {}}, nil
	}
	fake := &FakeBatches{Noise: c.noise, Seed: c.seed, ErrorRate: c.failRate, ExpireRate: c.failRate / 4, PerSecond: 2500}
	if err := fake.Start(); err != nil {
		return nil, err
	}
	return &batchAPI{
		client: fake.Client(),
		name:   "lexicon scorer behind a fake Message Batches API on " + fake.Addr(),
		// The fake processes 2 500 requests a second; Anthropic's batches
		// take minutes to hours, polled from 5 s up to a minute apart.
		opts:  []fanoutanthropic.Option{fanoutanthropic.WithPollInterval(100*time.Millisecond, 500*time.Millisecond)},
		close: fake.Close,
	}, nil
}

// batchMain is main for -batch.
func batchMain(c config, debugAddr string) error {
	if debugAddr != "" {
		return errors.New("-debug-addr shows fanout runs, and -batch makes none: RunBatch polls the batches instead")
	}
	api, err := openBatchAPI(c)
	if err != nil {
		return err
	}
	defer api.close()
	// Ctrl-C ends ctx: RunBatch then cancels the batches on the server.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := runBatch(ctx, c, api, os.Stderr)
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	return nil
}

// runBatch classifies the dataset of c through api, one request per
// sample, logging each request of the batch path to w.
func runBatch(ctx context.Context, c config, api *batchAPI, w io.Writer) (*BatchReport, error) {
	if c.samples < 1 {
		return nil, fmt.Errorf("-samples %d: want at least 1", c.samples)
	}
	items := Dataset(c.n, c.seed)
	reqs := make([]fanoutanthropic.BatchRequest, 0, len(items)*c.samples)
	for _, item := range items {
		params := sampleParams(anthropic.Model(c.model), item.Text)
		for s := 1; s <= c.samples; s++ {
			reqs = append(reqs, fanoutanthropic.BatchRequest{Key: sampleKey(item.ID, s), Params: params})
		}
	}
	trace := newBatchTrace(w)
	opts := append([]fanoutanthropic.Option{
		fanoutanthropic.WithBatchLimits(c.batchSize, fanoutanthropic.MaxBatchBytes),
		fanoutanthropic.WithRequestOptions(option.WithMiddleware(trace.middleware())),
	}, api.opts...)
	if c.prices != (fanoutanthropic.Prices{}) {
		opts = append(opts, fanoutanthropic.WithPrices(c.prices))
	}
	fmt.Fprintf(w, "batch: %d requests (%d texts × %d samples), at most %d a batch; Ctrl-C cancels the batches\n",
		len(reqs), len(items), c.samples, c.batchSize)
	start := time.Now()
	results, err := fanoutanthropic.RunBatch(ctx, api.client, reqs, opts...)
	if results == nil {
		return nil, err // bad input or options: no request was sent
	}
	rep := newBatchReport(c, api.name, items, results)
	rep.Wall = time.Since(start)
	rep.Batches, rep.Polls = trace.counts()
	rep.Interrupted = ctx.Err() != nil
	return rep, nil
}

// sampleKey is the key of a sample of a text, "TEXT/SAMPLE". It is not a
// valid custom_id (^[a-zA-Z0-9_-]{1,64}$): RunBatch maps it to one and
// back.
func sampleKey(id, sample int) string { return strconv.Itoa(id) + "/" + strconv.Itoa(sample) }

// voteOn counts the samples of item that the batch answered. Outside
// Gather, Vote is not told how many keys are to come, so it never stops
// early: it counts every sample, which the batch has paid for anyway.
func voteOn(item Item, samples int, results *fanout.Results[*anthropic.Message]) (Verdict, error) {
	vote := fanout.Vote(func(m *anthropic.Message) string { return parseLabel(messageText(m)) })
	first := ""
	for s := 1; s <= samples; s++ {
		r, _ := results.Get(sampleKey(item.ID, s))
		vote.Add(r)
		if s == 1 && r.OK() {
			first = parseLabel(messageText(r.Value))
		}
	}
	tally, err := vote.Result(context.Background())
	if err != nil {
		return Verdict{}, fmt.Errorf("text %d: %w", item.ID, err)
	}
	return Verdict{Item: item, Label: tally.Winner, Tally: tally, Started: samples, First: first}, nil
}

// messageText is the text of an answer.
func messageText(m *anthropic.Message) string {
	var b strings.Builder
	for _, block := range m.Content {
		if block.Type == "text" {
			b.WriteString(block.Text)
		}
	}
	return b.String()
}
