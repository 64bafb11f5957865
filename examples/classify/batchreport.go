package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// BatchReport sums up a -batch run: what the batches did with each key,
// and the votes counted from them.
type BatchReport struct {
	API         string
	Texts       int
	Samples     int // per text
	Requests    int
	Batches     int // created
	Polls       int
	Wall        time.Duration
	Interrupted bool           // the context ended: the batches were cancelled
	Outcomes    map[string]int // keys by outcome: succeeded, errored, expired, canceled
	Got, Want   map[string]int // labels voted, labels of the dataset
	Correct     int
	FirstRight  int              // texts whose first sample alone was right
	Unanimous   int              // votes with no dissent
	NoVote      map[string]error // texts without one answered sample, by text id
	Cost        fanout.Cost      // at the batch price
	Priced      bool
	FirstText   *Verdict  // the vote on the first text, if it had one
	FirstKeys   []keyLine // the keys of the first text
	FailedKeys  []keyLine // the first failed keys of the other texts, in input order
	Failed      int       // failed keys
}

// keyLine is one key's outcome, as the summary prints it.
type keyLine struct {
	Key, Outcome, Detail string
}

// maxFailedShown bounds the failed keys the summary lists.
const maxFailedShown = 8

func newBatchReport(c config, api string, items []Item, results *fanout.Results[*anthropic.Message]) *BatchReport {
	r := &BatchReport{API: api, Texts: len(items), Samples: c.samples, Requests: results.Len(),
		Outcomes: map[string]int{}, Got: map[string]int{}, Want: map[string]int{}, NoVote: map[string]error{},
		Cost: results.Cost(), Priced: c.prices != (fanoutanthropic.Prices{})}
	for _, x := range results.All() {
		line := keyLineOf(x)
		r.Outcomes[line.Outcome]++
		if x.Index < c.samples {
			r.FirstKeys = append(r.FirstKeys, line)
		}
		if x.Err != nil {
			r.Failed++
			if x.Index >= c.samples && len(r.FailedKeys) < maxFailedShown {
				r.FailedKeys = append(r.FailedKeys, line)
			}
		}
	}
	for i, it := range items {
		r.Want[it.Label]++
		v, err := voteOn(it, c.samples, results)
		if err != nil {
			r.NoVote[strconv.Itoa(it.ID)] = err
			continue
		}
		if i == 0 {
			r.FirstText = &v
		}
		r.Got[v.Label]++
		if v.Correct() {
			r.Correct++
		}
		if v.First == it.Label {
			r.FirstRight++
		}
		if v.Tally.Share == 1 {
			r.Unanimous++
		}
	}
	return r
}

// keyLineOf tells what the batch did with one key.
func keyLineOf(x fanout.Result[*anthropic.Message]) keyLine {
	switch {
	case x.OK():
		detail := fmt.Sprintf("%q, %d tokens", messageText(x.Value), x.Cost.Tokens)
		if x.Cost.Cents > 0 {
			detail += fmt.Sprintf(", %.4f¢", x.Cost.Cents)
		}
		return keyLine{x.Key, "succeeded", detail}
	case errors.Is(x.Err, fanoutanthropic.ErrBatchCanceled):
		return keyLine{x.Key, "canceled", x.Err.Error()}
	case errors.Is(x.Err, fanoutanthropic.ErrBatchExpired):
		return keyLine{x.Key, "expired", x.Err.Error()}
	}
	detail := x.Err.Error()
	if fanout.Retryable(x.Err) {
		detail += " (worth sending again)"
	}
	return keyLine{x.Key, "errored", detail}
}

// Print writes the summary to w: the batches, the keys' outcomes, the
// votes, the cost, then the keys of the first text and the first failed
// keys of the others.
func (r *BatchReport) Print(w io.Writer) {
	fmt.Fprintf(w, "\n%d texts × %d samples = %d requests, %s\n", r.Texts, r.Samples, r.Requests, r.API)
	fmt.Fprintf(w, "batches    %d created, %d polls, %v", r.Batches, r.Polls, r.Wall.Round(10*time.Millisecond))
	if r.Interrupted {
		fmt.Fprint(w, " (interrupted: the batches were cancelled on the server)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "outcomes   succeeded %d   errored %d   expired %d   canceled %d\n",
		r.Outcomes["succeeded"], r.Outcomes["errored"], r.Outcomes["expired"], r.Outcomes["canceled"])
	r.printVotes(w)
	if r.Priced {
		fmt.Fprintf(w, "cost       %d tokens, %.2f¢ at the batch price, half the %.2f¢ of the same calls to the Messages API\n",
			r.Cost.Tokens, r.Cost.Cents, 2*r.Cost.Cents)
	} else {
		fmt.Fprintf(w, "tokens     %d (-input-price and -output-price give the cost)\n", r.Cost.Tokens)
	}
	r.printKeys(w)
}

func (r *BatchReport) printVotes(w io.Writer) {
	voted := r.Texts - len(r.NoVote)
	if voted > 0 {
		fmt.Fprintf(w, "labels     %s\n", counts(r.Got))
		fmt.Fprintf(w, "dataset    %s\n", counts(r.Want))
		fmt.Fprintf(w, "accuracy   %.1f%%  (%d of %d voted labels match the dataset)\n",
			100*float64(r.Correct)/float64(voted), r.Correct, voted)
		fmt.Fprintf(w, "           the first sample alone: %.1f%%\n", 100*float64(r.FirstRight)/float64(voted))
	}
	fmt.Fprintf(w, "votes      %d counted, %d unanimous, %d without an answered sample; in a batch no vote stops early\n",
		voted, r.Unanimous, len(r.NoVote))
}

// printKeys lists what the batch did with each key of the first text, and
// with the first failed keys of the others.
func (r *BatchReport) printKeys(w io.Writer) {
	if len(r.FirstKeys) == 0 {
		return
	}
	first := strings.TrimSuffix(r.FirstKeys[0].Key, "/1")
	if v := r.FirstText; v != nil {
		fmt.Fprintf(w, "\ntext %s     %q, %s in the dataset: voted %s, %v of %v votes\n",
			first, v.Item.Text, v.Item.Label, v.Label, v.Tally.Votes, v.Tally.Total)
	} else {
		fmt.Fprintf(w, "\ntext %s     no vote: no sample was answered\n", first)
	}
	printKeyLines(w, r.FirstKeys)
	if len(r.FailedKeys) > 0 {
		fmt.Fprintf(w, "failed     %d keys; the first %d of the other texts:\n", r.Failed, len(r.FailedKeys))
		printKeyLines(w, r.FailedKeys)
	}
}

func printKeyLines(w io.Writer, lines []keyLine) {
	for _, l := range lines {
		fmt.Fprintf(w, "  %-8s %-9s  %s\n", l.Key, l.Outcome, l.Detail)
	}
}
