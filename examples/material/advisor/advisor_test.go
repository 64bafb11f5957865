package advisor_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/examples/material/advisor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func offline() advisor.Recommender {
	return advisor.Recommender{Analyst: advisor.TableAnalyst{}, Judge: advisor.TableJudge{}, Timeout: time.Second}
}

func TestSamplePartsGetTheMaterialTheirNeedsCallFor(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{"drone-arm", "composite"},
		{"gate-hinge", "metal"},
		{"kiln-support", "ceramic"},
		{"door-seal", "elastomer"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			p, err := advisor.LoadPart(tt.give)
			require.NoError(t, err)
			rec, err := offline().Recommend(context.Background(), p)
			require.NoError(t, err)
			assert.Equal(t, tt.want, rec.Material)
			assert.Greater(t, rec.Confidence, 0.5)
			assert.LessOrEqual(t, rec.Confidence, 1.0)
			assert.Len(t, rec.Analyses, len(advisor.Families))
		})
	}
}

func TestSamplesAreEveryShippedPart(t *testing.T) {
	assert.Equal(t, []string{"door-seal", "drone-arm", "gate-hinge", "kiln-support"}, advisor.Samples())
	_, err := advisor.LoadPart("no-such-part")
	assert.ErrorContains(t, err, "no sample part")
}

func TestRuledOutFamiliesSayWhy(t *testing.T) {
	p, err := advisor.LoadPart("gate-hinge")
	require.NoError(t, err)
	rec, err := offline().Recommend(context.Background(), p)
	require.NoError(t, err)
	byFamily := map[string]advisor.Analysis{}
	for _, r := range rec.Analyses {
		byFamily[r.Key] = r.Value
	}
	assert.Equal(t, []string{"costs $40.0/kg, over the $10.0/kg allowed"}, byFamily["composite"].Disqualified)
	assert.Contains(t, byFamily["ceramic"].Disqualified, "brittle under impact loads")
	assert.Zero(t, byFamily["wood"].Suitability)
	assert.Contains(t, rec.Rationale, "5 of 6 families ruled out")
}

func TestAnUnknownFamilyIsAnError(t *testing.T) {
	p, err := advisor.LoadPart("gate-hinge")
	require.NoError(t, err)
	_, err = advisor.TableAnalyst{}.Analyze(context.Background(), p, "glass")
	assert.ErrorContains(t, err, `no properties for family "glass"`)
}

// flaky fails one family and leaves another hanging past its deadline.
type flaky struct{ advisor.TableAnalyst }

func (f flaky) Analyze(ctx context.Context, p advisor.Part, fam string) (advisor.Analysis, error) {
	switch fam {
	case "metal":
		return advisor.Analysis{}, errors.New("analyst unavailable")
	case "wood":
		<-ctx.Done()
		return advisor.Analysis{}, ctx.Err()
	}
	return f.TableAnalyst.Analyze(ctx, p, fam)
}

func TestAFailedAnalystLosesNoOtherFamily(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := advisor.LoadPart("drone-arm")
		require.NoError(t, err)
		rc := advisor.Recommender{Analyst: flaky{advisor.TableAnalyst{Latency: 100 * time.Millisecond}}, Judge: advisor.TableJudge{}, Timeout: 2 * time.Second}
		rec, err := rc.Recommend(context.Background(), p)
		require.NoError(t, err)
		assert.Equal(t, "composite", rec.Material)
		errs := map[string]error{}
		for _, r := range rec.Analyses {
			if r.Err != nil {
				errs[r.Key] = r.Err
			}
		}
		require.Len(t, errs, 2)
		assert.ErrorContains(t, errs["metal"], "analyst unavailable")
		assert.ErrorIs(t, errs["wood"], fanout.ErrTaskTimeout)
		assert.Contains(t, rec.Rationale, "not heard from: metal")
		// wood timed out at each of the 4 default attempts, at 2s each,
		// with waits of 100, 200 and 400ms ±50% between them.
		assert.Equal(t, advisor.DefaultMaxAttempts, rec.Analyses[5].Attempts)
		assert.GreaterOrEqual(t, rec.FanOut, 8*time.Second+350*time.Millisecond)
		assert.LessOrEqual(t, rec.FanOut, 8*time.Second+1050*time.Millisecond)
	})
}

func TestBranchesRunInParallel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := advisor.LoadPart("gate-hinge")
		require.NoError(t, err)
		rc := advisor.Recommender{Analyst: advisor.TableAnalyst{Latency: time.Second}, Judge: advisor.TableJudge{}, Timeout: time.Minute}
		rec, err := rc.Recommend(context.Background(), p)
		require.NoError(t, err)
		var slowest time.Duration
		for _, r := range rec.Analyses {
			slowest = max(slowest, r.Elapsed)
		}
		assert.Equal(t, slowest, rec.FanOut, "the fan-out takes as long as its slowest analyst")
		assert.Greater(t, rec.Sequential(), 4*rec.FanOut)
	})
}

// failing answers only the families in ok, and fails the others with
// errDown at every attempt.
type failing struct {
	advisor.TableAnalyst
	ok map[string]bool
}

var errDown = errors.New("analyst down")

func (f failing) Analyze(ctx context.Context, p advisor.Part, fam string) (advisor.Analysis, error) {
	if !f.ok[fam] {
		return advisor.Analysis{}, errDown
	}
	return f.TableAnalyst.Analyze(ctx, p, fam)
}

// countingJudge is TableJudge, failing the first Fail calls with
// errOverloaded, and counting every call.
type countingJudge struct {
	Fail  int
	calls atomic.Int32
}

var errOverloaded = errors.New("judge overloaded")

func (j *countingJudge) Judge(ctx context.Context, p advisor.Part, results []fanout.Result[advisor.Analysis]) (advisor.Verdict, error) {
	if int(j.calls.Add(1)) <= j.Fail {
		return advisor.Verdict{}, errOverloaded
	}
	return advisor.TableJudge{}.Judge(ctx, p, results)
}

func TestTooFewAnalysesAreNotJudged(t *testing.T) {
	tests := []struct {
		name      string
		give      int // MinAnalyses
		wantJudge bool
	}{
		{"by default, 2 of 6 are too few", 0, false},
		{"3 are too few when 3 are needed", 3, false},
		{"2 are enough when 2 are needed", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, err := advisor.LoadPart("drone-arm")
				require.NoError(t, err)
				judge := &countingJudge{}
				rc := advisor.Recommender{Analyst: failing{ok: map[string]bool{"metal": true, "composite": true}},
					Judge: judge, Timeout: time.Second, MinAnalyses: tt.give}
				rec, err := rc.Recommend(context.Background(), p)
				require.Len(t, rec.Analyses, len(advisor.Families), "every analysis is kept")
				assert.Equal(t, 2, rec.Succeeded())
				if tt.wantJudge {
					require.NoError(t, err)
					assert.Equal(t, "composite", rec.Material)
					assert.Equal(t, int32(1), judge.calls.Load())
					return
				}
				assert.Zero(t, judge.calls.Load(), "the judge is not asked")
				assert.Zero(t, rec.Verdict)
				assert.Empty(t, rec.Judgement.Key)
				var tooFew *advisor.TooFewAnalysesError
				require.ErrorAs(t, err, &tooFew)
				assert.Equal(t, &advisor.TooFewAnalysesError{Part: "drone arm", Succeeded: 2, Total: 6, Need: max(tt.give, 3),
					Failed: []string{"polymer", "ceramic", "elastomer", "wood"}, Err: tooFew.Err}, tooFew)
				assert.ErrorIs(t, err, errDown, "the analysts' errors are reachable")
				assert.EqualError(t, err, fmt.Sprintf("material: no verdict for the drone arm: 2 of 6 analyses succeeded, "+
					"%d needed to judge (failed: polymer, ceramic, elastomer, wood)", max(tt.give, 3)))
			})
		})
	}
}

func TestTheJudgeIsRetriedLikeTheAnalysts(t *testing.T) {
	tests := []struct {
		name         string
		giveFail     int
		giveAttempts int // Retry.MaxAttempts
		wantAttempts int
		wantErr      bool
	}{
		{"a judge failing once gives its verdict at the second attempt", 1, 0, 2, false},
		{"a judge failing 3 times gives its verdict at the 4th, the default", 3, 0, 4, false},
		{"a judge that always fails is tried 4 times by default", 100, 0, 4, true},
		{"a judge that always fails is tried as often as Retry says", 100, 2, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, err := advisor.LoadPart("drone-arm")
				require.NoError(t, err)
				judge := &countingJudge{Fail: tt.giveFail}
				rc := advisor.Recommender{Analyst: advisor.TableAnalyst{}, Judge: judge, Timeout: time.Second,
					Retry: fanout.RetryPolicy{MaxAttempts: tt.giveAttempts}}
				rec, err := rc.Recommend(context.Background(), p)
				require.Len(t, rec.Analyses, len(advisor.Families))
				assert.Equal(t, 6, rec.Succeeded(), "the analyses are kept either way")
				assert.Equal(t, int32(tt.wantAttempts), judge.calls.Load())
				assert.Equal(t, tt.wantAttempts, rec.Judgement.Attempts)
				if !tt.wantErr {
					require.NoError(t, err)
					assert.Equal(t, "composite", rec.Material)
					return
				}
				assert.ErrorIs(t, err, errOverloaded)
				assert.EqualError(t, err, fmt.Sprintf("material: no verdict for the drone arm: "+
					"the judge failed after %d attempts: judge overloaded", tt.wantAttempts))
				assert.Zero(t, rec.Verdict)
			})
		})
	}
}

func TestAJudgeThatFindsNothingSuitableIsNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := advisor.LoadPart("drone-arm")
		require.NoError(t, err)
		// Only families the drone arm rules out answer.
		rc := advisor.Recommender{Analyst: failing{ok: map[string]bool{"polymer": true, "ceramic": true, "wood": true}},
			Judge: advisor.TableJudge{}, Timeout: time.Second}
		rec, err := rc.Recommend(context.Background(), p)
		assert.ErrorContains(t, err, "the judge failed after 1 attempt: no family suits the drone arm")
		assert.Equal(t, 1, rec.Judgement.Attempts)
	})
}

func TestAJudgeThatFindsNothingSuitableSaysOnlyWhatItKnows(t *testing.T) {
	p := advisor.Part{Name: "impossible part", Needs: advisor.Requirements{MinTensile: 1e6}}
	tests := []struct {
		name string
		give advisor.Analyst
		want string
	}{
		{"every family heard from and ruled out", advisor.TableAnalyst{},
			"the judge failed after 1 attempt: no family suits the impossible part " +
				"(ruled out: metal, polymer, ceramic, composite, elastomer, wood)"},
		{"some families not heard from", failing{ok: map[string]bool{"metal": true, "wood": true}},
			"(ruled out: metal, wood; not heard from: polymer (no analysis: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rc := advisor.Recommender{Analyst: tt.give, Judge: advisor.TableJudge{}, MinAnalyses: 1}
				_, err := rc.Recommend(context.Background(), p)
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.want)
				assert.NotContains(t, err.Error(), "from: )", "no empty list")
			})
		})
	}
}
