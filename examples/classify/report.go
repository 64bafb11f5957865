package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/gofanout/fanout"
)

// Report sums up a run of the classifier.
type Report struct {
	Classifier  string
	Texts       int
	Samples     int // per text
	Limit       int
	InFlight    int
	RPS         float64
	Got, Want   map[string]int // labels voted, labels of the dataset
	Correct     int
	FirstRight  int              // texts whose first sample alone was right
	Failed      map[string]error // texts whose vote failed, by key
	Started     int              // samples that made a call
	Stopped     int              // samples cancelled or skipped by an early decision
	Unanimous   int              // votes with no dissent
	Calls       int              // every call, retries included
	Retries     int
	Tokens      int64
	Wall        time.Duration
	CallTime    time.Duration // the calls' summed durations
	voteStopped int           // votes decided early
}

func newReport(c config, clf Classifier, items []Item, res *fanout.Results[Verdict]) *Report {
	r := &Report{Classifier: clf.Name(), Texts: len(items), Samples: c.samples, Limit: c.limit, InFlight: c.inFlight,
		RPS: c.rps, Got: map[string]int{}, Want: map[string]int{}, Failed: res.Errs(), Tokens: res.Cost().Tokens}
	for _, it := range items {
		r.Want[it.Label]++
	}
	for _, x := range res.All() {
		if !x.OK() {
			continue
		}
		v := x.Value
		r.Got[v.Label]++
		if v.Correct() {
			r.Correct++
		}
		if v.First == v.Item.Label {
			r.FirstRight++
		}
		r.Started += v.Started
		r.Stopped += v.Tally.Stopped
		if v.Tally.Decided {
			r.voteStopped++
		}
		if v.Tally.Share == 1 {
			r.Unanimous++
		}
	}
	return r
}

// Saved is the samples that never made a call: skipped once the vote was
// decided.
func (r *Report) Saved() int { return (r.Texts-len(r.Failed))*r.Samples - r.Started }

// Print writes the summary to w.
func (r *Report) Print(w io.Writer) {
	done := r.Texts - len(r.Failed)
	fmt.Fprintf(w, "\n%d texts × %d samples, %s\n", r.Texts, r.Samples, r.Classifier)
	samples := "one sample of a text at a time"
	if r.InFlight > 1 {
		samples = fmt.Sprintf("up to %d samples of a text at once", r.InFlight)
	}
	fmt.Fprintf(w, "%d texts at once, %s, %.0f calls/s shared\n\n", r.Limit, samples, r.RPS)
	fmt.Fprintf(w, "labels     %s\n", counts(r.Got))
	fmt.Fprintf(w, "dataset    %s\n", counts(r.Want))
	fmt.Fprintf(w, "accuracy   %.1f%%  (%d of %d voted labels match the dataset)\n",
		100*float64(r.Correct)/float64(max(done, 1)), r.Correct, done)
	fmt.Fprintf(w, "           the first sample alone: %.1f%%\n", 100*float64(r.FirstRight)/float64(max(done, 1)))
	fmt.Fprintf(w, "votes      %d decided early, %d unanimous, %d failed\n", r.voteStopped, r.Unanimous, len(r.Failed))
	fmt.Fprintf(w, "samples    %d budgeted, %d called, %d saved by early stopping, %d cancelled mid-call\n",
		done*r.Samples, r.Started, r.Saved(), r.Stopped-r.Saved())
	fmt.Fprintf(w, "calls      %d (%d samples' first tries, %d retried tries)", r.Calls, r.Started, r.Calls-r.Started)
	if r.Tokens > 0 {
		fmt.Fprintf(w, ", %d tokens", r.Tokens)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "wall time  %v; one call at a time: about %v (the calls' summed durations), %.0f× longer\n",
		r.Wall.Round(10*time.Millisecond), r.CallTime.Round(time.Second), r.CallTime.Seconds()/max(r.Wall.Seconds(), 1e-9))
	for _, k := range sortedKeys(r.Failed) {
		fmt.Fprintf(w, "failed     text %s: %v\n", k, r.Failed[k])
	}
}

// counts formats label counts in the order of labels, unclear last.
func counts(m map[string]int) string {
	var parts []string
	for _, l := range append(labels, Unclear) {
		if n, ok := m[l]; ok || l != Unclear {
			parts = append(parts, fmt.Sprintf("%s %d", l, n))
		}
	}
	return strings.Join(parts, "   ")
}

func sortedKeys(m map[string]error) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
