package advisor_test

import (
	"context"
	"errors"
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
		// wood timed out twice, at 2s each, with a jittered ~100ms between.
		assert.GreaterOrEqual(t, rec.FanOut, 4*time.Second)
		assert.Less(t, rec.FanOut, 4200*time.Millisecond)
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
