package main

import (
	"cmp"
	"slices"

	"github.com/gofanout/fanout"
)

// Ranked is a hit of the merged answer.
type Ranked struct {
	Hit
	Score   float64
	Sources []string // the sources that returned it, in input order
}

// rrfK damps the weight of the top ranks in reciprocal rank fusion; 60 is
// the value of Cormack et al., who introduced it.
const rrfK = 60

// merge fuses the hits of the sources that answered by reciprocal rank
// fusion: a hit scores 1/(rrfK+rank) for each source that returned it, so
// agreement between sources counts for more than any one source's order.
// Ties go to the URL, so the answer does not depend on timing.
func merge(results []fanout.Result[Answer]) []Ranked {
	byURL := map[string]*Ranked{}
	for _, r := range results {
		if !r.OK() {
			continue
		}
		for rank, h := range r.Value.Hits {
			m := byURL[h.URL]
			if m == nil {
				m = &Ranked{Hit: h}
				byURL[h.URL] = m
			}
			if !slices.Contains(m.Sources, r.Key) {
				m.Score += 1 / float64(rrfK+rank+1)
				m.Sources = append(m.Sources, r.Key)
			}
		}
	}
	merged := make([]Ranked, 0, len(byURL))
	for _, m := range byURL {
		merged = append(merged, *m)
	}
	slices.SortFunc(merged, func(a, b Ranked) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.URL, b.URL))
	})
	return merged
}
