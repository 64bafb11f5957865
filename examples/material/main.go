// Command material recommends a material family for a part, the way the
// "parallelization" pattern of LLM agents does it: six specialist analysts
// (metal, polymer, ceramic, composite, elastomer, wood) study the part at
// once, then an aggregation step compares their findings and picks one.
//
// Offline, the default, each analyst scores its family from a table of
// typical properties against the part's requirements; with
// ANTHROPIC_API_KEY set, Claude does the analyses and the judging.
//
//	go run ./material                     # every sample part, offline
//	go run ./material -part gate-hinge    # one sample
//	go run ./material -part my-part.json  # your own spec
//	ANTHROPIC_API_KEY=... go run ./material -part drone-arm -image arm.png
//
// Every call, the judge's included, is tried up to -attempts times (4 by
// default: enough for a 429 and then a 529), waiting what a 429's
// Retry-After asks. The judge is asked only once -min-analyses of the six
// analyses succeeded (3 by default); otherwise the part gets no verdict.
// Either way the analyses are printed, paid for as they are. Ctrl-C
// stops the run: the calls in flight are cancelled, the part they were
// for is printed with them, and no later part is asked about.
//
// The exit status is 0 when every part got a verdict; 3 when some part
// got none (its judge failed, or too few analyses succeeded) but at least
// one analysis succeeded, so the output has something to show; and 1
// when there is nothing to show: a bad flag, part or image, or not one
// analysis succeeded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/examples/material/advisor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: the usage is printed
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitStatus(err))
	}
}

// partialError is run's error when some part got no verdict, but the
// output shows analyses that succeeded.
type partialError struct{ err error }

func (e *partialError) Error() string { return e.err.Error() }
func (e *partialError) Unwrap() error { return e.err }

// exitStatus is 3 for a *partialError and 1 for any other error.
func exitStatus(err error) int {
	var partial *partialError
	if errors.As(err, &partial) {
		return 3
	}
	return 1
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("material", flag.ContinueOnError)
	partFlag := fs.String("part", "", "sample part ("+strings.Join(advisor.Samples(), ", ")+") or a JSON spec file; default: every sample")
	latency := fs.Duration("latency", 150*time.Millisecond, "simulated analyst latency offline (±50% by family)")
	timeout := fs.Duration("timeout", 60*time.Second, "deadline of each attempt of each call, the judge's included")
	attempts := fs.Int("attempts", advisor.DefaultMaxAttempts, "attempts of each call at most, the judge's included")
	minAnalyses := fs.Int("min-analyses", advisor.DefaultMinAnalyses, "analyses that must succeed before the judge is asked")
	model := fs.String("model", envOr("ANTHROPIC_MODEL", "claude-sonnet-4-5"), "Claude model, when ANTHROPIC_API_KEY is set")
	image := fs.String("image", "", "picture of the part, sent to Claude with each analysis")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *attempts < 1 || *minAnalyses < 1 || *minAnalyses > len(advisor.Families) {
		return fmt.Errorf("material: -attempts must be at least 1 and -min-analyses from 1 to %d", len(advisor.Families))
	}
	rc := advisor.Recommender{Analyst: advisor.TableAnalyst{Latency: *latency}, Judge: advisor.TableJudge{}, Timeout: *timeout,
		MinAnalyses: *minAnalyses, Retry: fanout.RetryPolicy{MaxAttempts: *attempts}}
	mode := fmt.Sprintf("offline: property table, simulated analyst latency %v ±50%%", *latency)
	if os.Getenv("ANTHROPIC_API_KEY") != "" {
		c := NewClaude(*model)
		if *image != "" {
			if err := c.WithImage(*image); err != nil {
				return err
			}
		}
		rc.Analyst, rc.Judge = c, c
		mode = "Claude " + *model + " via the Messages API"
	} else if *image != "" {
		return fmt.Errorf("material: -image needs ANTHROPIC_API_KEY: the offline analysts cannot see")
	}
	parts := advisor.Samples()
	if *partFlag != "" {
		parts = []string{*partFlag}
	}
	fmt.Fprintf(out, "material recommender (%s)\n", mode)
	fmt.Fprintf(out, "each call tried up to %d times; a verdict needs %d of the %d analyses\n", *attempts, *minAnalyses, len(advisor.Families))
	return recommendAll(ctx, rc, parts, out)
}

// recommendAll recommends a material for each part in turn, and prints
// what it found even for a part that gets no verdict, whose error it
// keeps for the end. Once ctx ends, it asks about no more parts.
func recommendAll(ctx context.Context, rc advisor.Recommender, parts []string, out io.Writer) error {
	var noVerdict []error
	succeeded := 0
	for _, name := range parts {
		if ctx.Err() != nil {
			// The parts not asked yet would only show six skipped analyses.
			noVerdict = append(noVerdict, fmt.Errorf("material: stopped before the %s: %w", name, context.Cause(ctx)))
			break
		}
		p, err := advisor.LoadPart(name)
		if err != nil {
			return err
		}
		rec, err := rc.Recommend(ctx, p)
		if rec.Analyses == nil {
			return err
		}
		report(out, p, rec, err)
		succeeded += rec.Succeeded()
		if err != nil {
			noVerdict = append(noVerdict, err)
		}
	}
	switch {
	case noVerdict == nil:
		return nil
	case succeeded == 0:
		return errors.Join(noVerdict...)
	}
	return &partialError{errors.Join(noVerdict...)}
}

// report prints the analyses of p, then its verdict or, if err, why
// there is none.
func report(out io.Writer, p advisor.Part, rec advisor.Recommendation, err error) {
	fmt.Fprintf(out, "\n== %s: %s\n", p.Name, p.Description)
	for _, r := range rec.Analyses {
		outcome := r.Value.Outcome()
		if r.Err != nil {
			outcome = fmt.Sprintf("error: %v", r.Err)
		}
		if r.Attempts > 1 {
			outcome += fmt.Sprintf(" (%d attempts)", r.Attempts)
		}
		fmt.Fprintf(out, "  %-9s %6s  %s\n", r.Key, r.Elapsed.Round(time.Millisecond), outcome)
	}
	if err != nil {
		fmt.Fprintf(out, "  -> %v\n", err)
	} else {
		fmt.Fprintf(out, "  -> %s\n", rec.Verdict)
	}
	seq, par := rec.Sequential(), rec.FanOut
	fmt.Fprintf(out, "  six analyses: %v in parallel vs %v one after another (%.1fx); %s\n",
		par.Round(time.Millisecond), seq.Round(time.Millisecond), float64(seq)/float64(max(par, 1)), judging(rec.Judgement))
	if judge := rec.Judgement.Cost.Tokens; judge > 0 {
		fmt.Fprintf(out, "  tokens: %d for the analyses, %d for the judge\n", rec.Cost().Tokens-judge, judge)
	} else if c := rec.Cost(); c.Tokens > 0 {
		fmt.Fprintf(out, "  tokens: %d for the analyses\n", c.Tokens)
	}
}

// judging says how long the judge took, and how many attempts if more
// than one.
func judging(j fanout.Result[advisor.Verdict]) string {
	switch {
	case j.Key == "":
		return "the judge was not asked"
	case j.Attempts > 1:
		return fmt.Sprintf("judging %v (%d attempts)", j.Elapsed.Round(time.Millisecond), j.Attempts)
	}
	return fmt.Sprintf("judging %v", j.Elapsed.Round(time.Millisecond))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
