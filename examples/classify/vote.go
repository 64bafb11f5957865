package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode"

	"github.com/gofanout/fanout"
)

// Query is one call of a classifier: a text, which sample of it this is
// (from 1), and which try of that sample (1, then 2 for the first retry).
type Query struct {
	Item   Item
	Sample int
	Try    int
}

// Classifier labels a text. Its answer may be free text: [parseLabel]
// turns it into the label it votes for.
type Classifier interface {
	Classify(ctx context.Context, q Query) (string, error)
	Name() string
}

// Unclear is the vote of an answer that names no label.
const Unclear = "unclear"

// parseLabel maps an answer ("Positive.", " negative\n") to the label it
// names, or Unclear.
func parseLabel(answer string) string {
	word, _, _ := strings.Cut(strings.TrimSpace(strings.ToLower(answer)), " ")
	word = strings.TrimFunc(word, func(r rune) bool { return !unicode.IsLetter(r) })
	for _, l := range labels {
		if word == l {
			return l
		}
	}
	return Unclear
}

// Verdict is the outcome of one text's vote.
type Verdict struct {
	Item    Item
	Label   string
	Tally   fanout.Tally[string]
	Started int    // samples that made at least one call; the rest were saved
	First   string // the label of the first sample alone, if it answered
}

// Correct reports whether the vote agrees with the dataset.
func (v Verdict) Correct() bool { return v.Label == v.Item.Label }

// Voter classifies a text by self-consistency: it asks for several
// samples and takes a majority vote that stops as soon as no other label
// can win, so a clear text costs fewer calls than Samples.
//
// Only a sample that has not started when the vote is decided is saved; one
// already running is cancelled, its call made. So InFlight trades calls for
// the latency of one text: with 1, samples go one after another and a
// unanimous text costs a majority of calls and no more; with Samples, they
// all start at once and nothing is saved. In a batch, the other texts keep
// the calls busy meanwhile, so 1 is the better choice unless one text's
// latency matters.
type Voter struct {
	Classifier Classifier
	Samples    int             // samples per text
	InFlight   int             // samples of one text in flight at once
	Options    []fanout.Option // for each text's run: rate limit, retry, observers
}

// Classify runs the vote on item. It is called from the tasks of the
// outer run, so each text's vote is a run nested in a task: the nested
// run has workers of its own and shares only the rate limiter, so it
// cannot wait on a slot that its caller holds.
func (v *Voter) Classify(ctx context.Context, item Item) (Verdict, error) {
	var started atomic.Int32
	var first atomic.Value // the label of sample 1
	tasks := make([]fanout.Task[string], v.Samples)
	for i := range tasks {
		sample, tries := i+1, 0 // a sample's tries are sequential
		tasks[i] = fanout.Task[string]{Key: "sample-" + strconv.Itoa(sample), Do: func(ctx context.Context) (string, error) {
			tries++
			if tries == 1 {
				started.Add(1)
			}
			answer, err := v.Classifier.Classify(ctx, Query{Item: item, Sample: sample, Try: tries})
			if err == nil && sample == 1 {
				first.Store(parseLabel(answer))
			}
			return answer, err
		}}
	}
	opts := append([]fanout.Option{fanout.WithLimit(v.InFlight)}, v.Options...)
	tally, err := fanout.Gather(ctx, tasks, fanout.Vote(parseLabel), opts...)
	if err != nil {
		return Verdict{}, fmt.Errorf("text %d: %w", item.ID, err)
	}
	firstLabel, _ := first.Load().(string)
	return Verdict{Item: item, Label: tally.Winner, Tally: tally, Started: int(started.Load()), First: firstLabel}, nil
}
