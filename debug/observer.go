package fanoutdebug

import (
	"context"

	"github.com/gofanout/fanout"
)

// Observer returns an Observer that shows each run it is given on the
// page, under name: the entry point or the job ("classify", "vote",
// "crawl ingest"), since the page cannot tell which it was. One Observer
// may watch any number of runs, one after another or at once, nested ones
// included; each is a run of its own on the page. Once a run's RunDone
// has come, its hooks are ignored: a finished run shows its final figures.
func (p *Page) Observer(name string) *fanout.Observer {
	o := &observer{p: p, name: clip(name)}
	return &fanout.Observer{
		RunStart:     o.runStart,
		TaskStart:    o.taskStart,
		AttemptStart: o.attemptStart,
		AttemptDone:  o.attemptDone,
		Retry:        o.retry,
		Hedge:        o.hedge,
		LimiterWait:  o.limiterWait,
		TaskDone:     o.taskDone,
		RunDone:      o.runDone,
	}
}

// observer is one Observer of a Page. Its runs are found through the
// context the run passes to every hook, under a key of this observer's
// own, so that two observers on one run, or a nested run, never mix.
type observer struct {
	p    *Page
	name string
}

type runKey struct{ o *observer }

// parentKey holds the innermost run of the page in a context, whichever
// of its observers follows it: a run that starts under it is nested in one
// of that run's tasks, unless it is that very run, seen by a second
// observer of the page (see runStart).
type parentKey struct{ p *Page }

// run returns the run of ctx, nil if the page does not follow it or it
// has ended: a hook called after RunDone (by a goroutine a task left
// behind, say) must not change a run's final figures.
func (o *observer) run(ctx context.Context) *runState {
	r, _ := ctx.Value(runKey{o}).(*runState)
	if r == nil || r.ended.Load() {
		return nil
	}
	return r
}

func (o *observer) runStart(ctx context.Context, tasks int) context.Context {
	parent, _ := ctx.Value(parentKey{o.p}).(*runState)
	done := ctx.Done()
	if parent != nil && done == parent.startDone {
		// Between two RunStart hooks of one run the context gains values,
		// never a cancellation; between a run and one nested in its task
		// it gains the run's own. So this is the same run, seen again.
		parent = parent.parentRun()
	}
	r := o.p.begin(o.name, tasks, parent, done)
	if r != nil {
		ctx = context.WithValue(ctx, parentKey{o.p}, r)
	}
	// A run beyond WithMaxRuns stores a nil *runState all the same, so that
	// its hooks do not find the run it is nested in.
	return context.WithValue(ctx, runKey{o}, r)
}

func (o *observer) taskStart(ctx context.Context, key string) {
	if r := o.run(ctx); r != nil {
		r.taskStart(key)
	}
}

func (o *observer) attemptStart(ctx context.Context, a fanout.AttemptInfo) context.Context {
	if r := o.run(ctx); r != nil {
		r.attemptStart(a)
	}
	return ctx
}

func (o *observer) attemptDone(ctx context.Context, a fanout.AttemptInfo) {
	if r := o.run(ctx); r != nil {
		r.attemptDone(a)
	}
}

func (o *observer) retry(ctx context.Context, ri fanout.RetryInfo) {
	if r := o.run(ctx); r != nil {
		rv := r.retry(ri)
		if ri.ServerDirected {
			o.p.serverWait(r, rv)
		}
	}
}

func (o *observer) hedge(ctx context.Context, _ fanout.HedgeInfo) {
	if r := o.run(ctx); r != nil {
		r.hedge()
	}
}

func (o *observer) limiterWait(ctx context.Context, w fanout.WaitInfo) {
	if r := o.run(ctx); r != nil {
		r.limiterWait(w.Wait)
	}
}

func (o *observer) taskDone(ctx context.Context, t fanout.TaskInfo) {
	if r := o.run(ctx); r != nil {
		r.taskDone(t)
	}
}

func (o *observer) runDone(ctx context.Context, s fanout.RunSummary) {
	if r := o.run(ctx); r != nil {
		o.p.finish(r, s)
	}
}
