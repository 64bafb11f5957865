package fanout

import (
	"cmp"
	"context"
)

// Tally is the outcome of a [Vote] or [WeightedVote].
type Tally[V comparable] struct {
	Winner V
	Votes  float64       // the winner's votes (weights, for WeightedVote)
	Total  float64       // all votes counted
	Share  float64       // Votes / Total
	Counts map[V]float64 // votes per outcome
	// Decided is true when the vote stopped early because no other
	// outcome could still overtake the winner.
	Decided bool
	// Failed counts keys that failed before the decision and cast no vote;
	// Stopped counts keys cancelled or skipped by the early decision.
	Failed, Stopped int
}

// Vote returns an Aggregator that takes a majority over pick(value) of the
// successful keys: pick maps a free-form answer to the choice it voices,
// so that LLM answers that differ in wording count as one vote. The vote
// decides, and stops the run, as soon as no other outcome can catch up
// with the leader even if every remaining key votes for it. Ties go to the
// outcome voted for by the earliest task in input order, so the answer
// does not depend on timing. With no successful key its error joins the
// failures.
func Vote[T any, V comparable](pick func(T) V) Aggregator[T, Tally[V]] {
	return &vote[T, V]{pick: pick, counts: make(map[V]float64), first: make(map[V]int), remaining: -1}
}

// WeightedVote is [Vote] with each key's vote worth its Task.Weight:
// Gather shows it the tasks before the run; over a lazy source
// ([GatherSeq], [GatherGroup]) each Result carries its task's weight.
func WeightedVote[T any, V comparable](pick func(T) V) Aggregator[T, Tally[V]] {
	v := Vote[T, V](pick).(*vote[T, V])
	v.weighted = true
	return v
}

type vote[T any, V comparable] struct {
	pick      func(T) V
	weighted  bool
	counts    map[V]float64
	first     map[V]int // lowest input index voting for each outcome
	weights   []float64 // by task index, from Begin; nil means 1 each
	remaining float64   // votes still to come; -1 if unknown
	total     float64
	failed    failures
	decided   bool
	stopped   int
}

// weight is r's vote: 1, or for WeightedVote its task's Weight, known
// from Begin or, over a lazy source, carried by r.
func (v *vote[T, V]) weight(r Result[T]) float64 {
	switch {
	case !v.weighted:
		return 1
	case r.Index < len(v.weights):
		return v.weights[r.Index]
	}
	return cmp.Or(r.weight, 1)
}

func (v *vote[T, V]) check(int) error {
	name := "Vote"
	if v.weighted {
		name = "WeightedVote"
	}
	return nilFunc(name, "pick", v.pick == nil)
}

func (v *vote[T, V]) Begin(tasks []Task[T]) {
	if v.weighted {
		v.weights = make([]float64, len(tasks))
		for i, t := range tasks {
			v.weights[i] = cmp.Or(t.Weight, 1)
		}
	}
	v.remaining = float64(len(tasks))
	if v.weighted {
		v.remaining = 0
		for _, w := range v.weights {
			v.remaining += w
		}
	}
}

func (v *vote[T, V]) Add(r Result[T]) bool {
	if v.decided {
		v.stopped++
		return true
	}
	w := v.weight(r)
	if v.remaining >= 0 {
		v.remaining -= w
	}
	if r.Err != nil {
		v.failed.add(r.Index, r.Key, r.Err)
	} else {
		choice := v.pick(r.Value)
		v.counts[choice] += w
		v.total += w
		if i, seen := v.first[choice]; !seen || r.Index < i {
			v.first[choice] = r.Index
		}
	}
	if v.remaining >= 0 {
		lead, second := v.leaders()
		v.decided = v.counts[lead] > second+v.remaining && v.remaining > 0
	}
	return v.decided
}

// leaders returns the winning outcome and the runner-up's votes.
func (v *vote[T, V]) leaders() (lead V, second float64) {
	best := -1.0
	for c, n := range v.counts {
		switch {
		case n > best || (n == best && v.first[c] < v.first[lead]):
			second = max(second, best)
			lead, best = c, n
		default:
			second = max(second, n)
		}
	}
	return lead, second
}

func (v *vote[T, V]) Result(context.Context) (Tally[V], error) {
	t := Tally[V]{Counts: v.counts, Total: v.total, Decided: v.decided, Failed: len(v.failed), Stopped: v.stopped}
	if v.total == 0 {
		return t, v.failed.none("vote")
	}
	t.Winner, _ = v.leaders()
	t.Votes = v.counts[t.Winner]
	t.Share = t.Votes / t.Total
	return t, nil
}
