package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"
	"unicode"
)

// Lexicon is the offline classifier: it sums the weights of the words of a
// text that it knows, flipping the word after a negation, and labels the
// text by the sign of the sum. It is a stand-in for a model, not a good
// sentiment classifier.
//
// To behave like samples of a model at a non-zero temperature, each sample
// adds seeded Gaussian noise to the score, so the samples of an unclear
// text disagree now and then, and a vote has something to do. Each call
// also sleeps for a simulated latency and, for a share of first tries,
// fails with a simulated overload, so that retries show. Everything is
// seeded by the text, the sample and the try: a run is reproducible up to
// the order in which calls finish.
type Lexicon struct {
	Noise    float64       // standard deviation of the noise on the score
	Latency  time.Duration // mean simulated latency of a call
	FailRate float64       // share of first tries that fail with ErrOverloaded
	Seed     uint64
}

// ErrOverloaded is the simulated transient failure of a call.
var ErrOverloaded = errors.New("classify: simulated overload, try again")

var lexicon = map[string]float64{
	"great": 2, "excellent": 2, "lovely": 1.5, "perfect": 2, "fantastic": 2, "reliable": 1, "superb": 2,
	"comfortable": 1, "fast": 1, "love": 2, "enjoyed": 1.5, "recommend": 1.5, "adore": 2,
	"terrible": -2, "awful": -2, "broken": -1.5, "slow": -1, "disappointing": -1.5, "useless": -2,
	"flimsy": -1, "rude": -1.5, "overpriced": -1, "hate": -2, "regret": -2, "returned": -1, "stand": -0.5,
}

var negations = map[string]bool{"not": true, "never": true, "no": true, "can't": true}

// Score returns the noiseless score of text: above 0.5 is positive, below
// -0.5 negative.
func Score(text string) float64 {
	words := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && r != '\'' && r != '-'
	})
	score, negate := 0.0, false
	for _, w := range words {
		if negations[w] {
			negate = true
			continue
		}
		if v, ok := lexicon[w]; ok {
			if negate {
				v = -v
			}
			score += v
		}
		negate = false
	}
	return score
}

// labelOf labels a score.
func labelOf(score float64) string {
	switch {
	case score > 0.5:
		return Positive
	case score < -0.5:
		return Negative
	default:
		return Neutral
	}
}

// Classify labels q's text as one sample of the lexicon model would.
func (l *Lexicon) Classify(ctx context.Context, q Query) (string, error) {
	r := rand.New(rand.NewPCG(l.Seed^uint64(q.Item.ID), uint64(q.Sample)<<16|uint64(q.Try)))
	// Simulated latency: uniform between half and one and a half times
	// the mean.
	if l.Latency > 0 {
		d := l.Latency/2 + time.Duration(r.Int64N(int64(l.Latency)))
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}
	if q.Try == 1 && r.Float64() < l.FailRate {
		return "", ErrOverloaded
	}
	return labelOf(Score(q.Item.Text) + r.NormFloat64()*l.Noise), nil
}

// Name describes the classifier for the summary.
func (l *Lexicon) Name() string {
	return "lexicon scorer, offline (simulated latency " + (l.Latency / 2).String() + "–" +
		(l.Latency * 3 / 2).String() + " per call)"
}
