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
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gofanout/fanout/examples/material/advisor"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("material", flag.ContinueOnError)
	partFlag := fs.String("part", "", "sample part ("+strings.Join(advisor.Samples(), ", ")+") or a JSON spec file; default: every sample")
	latency := fs.Duration("latency", 150*time.Millisecond, "simulated analyst latency offline (±50% by family)")
	timeout := fs.Duration("timeout", 60*time.Second, "deadline of each analyst's attempt")
	model := fs.String("model", envOr("ANTHROPIC_MODEL", "claude-sonnet-4-5"), "Claude model, when ANTHROPIC_API_KEY is set")
	image := fs.String("image", "", "picture of the part, sent to Claude with each analysis")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rc := advisor.Recommender{Analyst: advisor.TableAnalyst{Latency: *latency}, Judge: advisor.TableJudge{}, Timeout: *timeout}
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
	for _, name := range parts {
		p, err := advisor.LoadPart(name)
		if err != nil {
			return err
		}
		rec, err := rc.Recommend(ctx, p)
		if err != nil {
			return err
		}
		report(out, p, rec)
	}
	return nil
}

func report(out io.Writer, p advisor.Part, rec advisor.Recommendation) {
	fmt.Fprintf(out, "\n== %s: %s\n", p.Name, p.Description)
	for _, r := range rec.Analyses {
		outcome := r.Value.Outcome()
		if r.Err != nil {
			outcome = fmt.Sprintf("error: %v", r.Err)
		}
		fmt.Fprintf(out, "  %-9s %6s  %s\n", r.Key, r.Elapsed.Round(time.Millisecond), outcome)
	}
	fmt.Fprintf(out, "  -> %s\n", rec.Verdict)
	seq, par := rec.Sequential(), rec.FanOut
	fmt.Fprintf(out, "  six analyses: %v in parallel vs %v one after another (%.1fx); judging %v\n",
		par.Round(time.Millisecond), seq.Round(time.Millisecond), float64(seq)/float64(max(par, 1)), rec.Judging.Round(time.Millisecond))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
