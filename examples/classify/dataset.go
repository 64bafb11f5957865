package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Labels, in the order the summary prints them.
const (
	Positive = "positive"
	Negative = "negative"
	Neutral  = "neutral"
)

// labels lists the labels in summary order.
var labels = []string{Positive, Negative, Neutral}

// Item is one text to classify and the label the dataset gives it.
type Item struct {
	ID    int
	Text  string
	Label string
}

// The word lists of the templates. Some words are missing from the
// lexicon on purpose ("stellar", "dreadful", ...), and some texts mix
// praise and blame, so that a lexicon scorer gets a share of them wrong,
// as a real classifier would.
var (
	things   = []string{"kettle", "headphones", "hotel room", "delivery", "pizza", "laptop", "support call", "train ride", "jacket", "app update", "coffee", "museum tour"}
	goodAdj  = []string{"great", "excellent", "lovely", "perfect", "fantastic", "reliable", "stellar", "superb", "comfortable", "fast"}
	badAdj   = []string{"terrible", "awful", "broken", "slow", "disappointing", "useless", "dreadful", "flimsy", "rude", "overpriced"}
	goodVerb = []string{"love", "enjoyed", "recommend", "adore"}
	badVerb  = []string{"hate", "regret buying", "returned", "can't stand"}
	plainAdj = []string{"blue", "medium-sized", "made in Portugal", "on the second floor", "sold in pairs"}
	days     = []string{"Monday", "Tuesday", "Friday", "the weekend", "the 3rd"}
)

type template struct {
	label  string
	format func(r *rand.Rand) string
}

func pick(r *rand.Rand, words []string) string { return words[r.IntN(len(words))] }

var templates = []template{
	{Positive, func(r *rand.Rand) string { return fmt.Sprintf("The %s was %s.", pick(r, things), pick(r, goodAdj)) }},
	{Positive, func(r *rand.Rand) string { return fmt.Sprintf("I %s this %s.", pick(r, goodVerb), pick(r, things)) }},
	{Positive, func(r *rand.Rand) string {
		return fmt.Sprintf("Not %s at all: the %s was %s.", pick(r, badAdj), pick(r, things), pick(r, goodAdj))
	}},
	{Positive, func(r *rand.Rand) string {
		return fmt.Sprintf("The %s was a bit %s, but honestly %s overall.", pick(r, things), pick(r, badAdj), pick(r, goodAdj))
	}},
	{Negative, func(r *rand.Rand) string { return fmt.Sprintf("The %s was %s.", pick(r, things), pick(r, badAdj)) }},
	{Negative, func(r *rand.Rand) string { return fmt.Sprintf("I %s this %s.", pick(r, badVerb), pick(r, things)) }},
	{Negative, func(r *rand.Rand) string {
		return fmt.Sprintf("The %s was not %s, quite %s really.", pick(r, things), pick(r, goodAdj), pick(r, badAdj))
	}},
	{Negative, func(r *rand.Rand) string {
		return fmt.Sprintf("The %s looked %s, but it was %s.", pick(r, things), pick(r, goodAdj), pick(r, badAdj))
	}},
	{Neutral, func(r *rand.Rand) string { return fmt.Sprintf("The %s is %s.", pick(r, things), pick(r, plainAdj)) }},
	{Neutral, func(r *rand.Rand) string { return fmt.Sprintf("My %s arrived on %s.", pick(r, things), pick(r, days)) }},
	{Neutral, func(r *rand.Rand) string {
		return fmt.Sprintf("I used the %s on %s and again on %s.", pick(r, things), pick(r, days), pick(r, days))
	}},
}

// Dataset returns n labelled texts, the same ones for the same seed.
func Dataset(n int, seed uint64) []Item {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	items := make([]Item, n)
	for i := range items {
		t := templates[r.IntN(len(templates))]
		text := t.format(r)
		items[i] = Item{ID: i, Text: strings.ToUpper(text[:1]) + text[1:], Label: t.label}
	}
	return items
}
