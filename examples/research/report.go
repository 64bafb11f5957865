package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gofanout/fanout"
)

// printReport prints the table of sources, the merged answer and what the
// retries, hedges and limiter did. maxWait is the retry policy's, to
// explain the sources that gave up at once.
func printReport(w io.Writer, r *Report, maxWait time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tLATENCY\tATTEMPTS\tHEDGES\tLIMITER WAIT\tOUTCOME")
	for _, s := range r.Sources {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%v\t%s\n", s.Key, round(s.Elapsed), s.Attempts, s.Hedges,
			round(s.LimiterWait), outcome(s, maxWait))
	}
	tw.Flush()

	fmt.Fprintf(w, "\nmerged answer for %q (%d of %d sources, %v):\n", r.Query, r.answered(), len(r.Sources), round(r.Elapsed))
	for i, m := range r.Merged {
		if i == 5 {
			fmt.Fprintf(w, "  ... and %d more\n", len(r.Merged)-i)
			break
		}
		fmt.Fprintf(w, "  %d. %-40s %s  [%s]\n", i+1, m.Title, m.URL, strings.Join(m.Sources, " "))
	}

	fmt.Fprintln(w, "\nwhat the resilience features did:")
	for _, line := range r.resilience(maxWait) {
		fmt.Fprintln(w, "  "+line)
	}
}

// outcome describes how a source ended.
func outcome(s SourceReport, maxWait time.Duration) string {
	var notes []string
	for _, r := range s.Retries {
		if r.ServerDirected {
			notes = append(notes, brief(r.Err)+", waited as told")
		} else {
			notes = append(notes, fmt.Sprintf("%s, backed off %v", brief(r.Err), round(r.Wait)))
		}
	}
	if s.HedgeWon {
		notes = append(notes, "hedge won")
	}
	var head string
	if s.OK() {
		head = fmt.Sprintf("ok, %d hits", len(s.Value.Hits))
		if len(s.Value.Hits) == 1 {
			head = "ok, 1 hit"
		}
	} else {
		head = "FAILED: " + brief(s.Err)
		if he := httpError(s.Err); he != nil && he.Delay > maxWait {
			head += fmt.Sprintf(" > max wait %v: not retried", maxWait)
		}
	}
	if len(notes) == 0 {
		return head
	}
	return head + " (" + strings.Join(notes, "; ") + ")"
}

func httpError(err error) *fanout.HTTPError {
	var he *fanout.HTTPError
	if errors.As(err, &he) {
		return he
	}
	return nil
}

// answered counts the sources that succeeded.
func (r *Report) answered() int {
	n := 0
	for _, s := range r.Sources {
		if s.OK() {
			n++
		}
	}
	return n
}

// resilience sums up the retries, hedges, limiter waits and refusals of
// the run, one line each.
func (r *Report) resilience(maxWait time.Duration) []string {
	var told, backoff []string
	var hedged, won []string
	var gaveUp []string
	started := 0
	var waited time.Duration
	for _, s := range r.Sources {
		for _, rt := range s.Retries {
			item := fmt.Sprintf("%s %v", s.Key, round(rt.Wait))
			if rt.ServerDirected {
				told = append(told, item)
			} else {
				backoff = append(backoff, fmt.Sprintf("%s after %s", item, brief(rt.Err)))
			}
		}
		started += s.Hedges
		if s.Hedges > 0 {
			hedged = append(hedged, fmt.Sprintf("%s %d", s.Key, s.Hedges))
		}
		if s.HedgeWon {
			won = append(won, s.Key)
		}
		waited += s.LimiterWait
		if he := httpError(s.Err); he != nil && he.Delay > maxWait {
			gaveUp = append(gaveUp, fmt.Sprintf("%s asked for %v", s.Key, he.Delay))
		}
	}
	list := func(items []string) string {
		if len(items) == 0 {
			return "none"
		}
		return strings.Join(items, ", ")
	}
	return []string{
		fmt.Sprintf("retries after 429, waiting as the server asked: %d (%s)", len(told), list(told)),
		fmt.Sprintf("retries with backoff: %d (%s)", len(backoff), list(backoff)),
		fmt.Sprintf("429s that asked for more than %v, not retried: %d (%s)", maxWait, len(gaveUp), list(gaveUp)),
		fmt.Sprintf("hedges started: %d (%s), won: %d (%s)", started, list(hedged), len(won), list(won)),
		fmt.Sprintf("time spent waiting on the shared limiter and its 429 cooldowns: %v", round(waited)),
	}
}
