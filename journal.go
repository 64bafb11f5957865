package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// Journal records each key's final outcome as it completes, so that a
// rerun of the same run, with the same journal and keys, returns the
// successes it recorded without calling Do again and runs only the rest:
// a fan-out of paid calls that dies at 9 000 of 10 000 pays for 1 000 on
// the rerun. Failed keys are recorded too, and run again. A Journal must
// be safe for concurrent use.
type Journal interface {
	// Lookup returns the entry recorded for key, if any.
	Lookup(ctx context.Context, key string) (e Entry, ok bool, err error)
	// Record stores key's entry. It must be durable when Record returns:
	// the run counts on it not to call Do again for that key.
	Record(ctx context.Context, key string, e Entry) error
}

// Entry is a key's outcome as a [Journal] keeps it.
type Entry struct {
	Value    []byte `json:"value,omitempty"` // the value, encoded by the run's Codec; a success only
	Err      string `json:"error,omitempty"` // the error's message; a failure only
	Kind     string `json:"kind,omitempty"`  // ErrorKind of the failure
	Attempts int    `json:"attempts"`
	Cost     Cost   `json:"cost"`
}

// OK reports whether the entry records a success.
func (e Entry) OK() bool { return e.Err == "" }

// Codec encodes a key's value for a [Journal]. JSON is the default.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// WithJournal records every key's outcome in j as it completes and, for a
// key j already holds a success for, returns that Result (with Replayed
// set) without calling Do. The value is encoded as JSON unless
// [WithCodec] says otherwise. A key whose lookup fails is not run (it
// fails with the journal's error: running it could pay twice); a key whose
// success cannot be recorded keeps its value, with the journal's error.
func WithJournal(j Journal) Option {
	return func(c *config) {
		if j == nil {
			c.invalid("WithJournal(nil): journal must not be nil")
			return
		}
		c.journal = j
	}
}

// WithCodec sets how [WithJournal] encodes values.
func WithCodec(codec Codec) Option {
	return func(c *config) {
		if codec == nil {
			c.invalid("WithCodec(nil): codec must not be nil")
			return
		}
		c.codec = codec
	}
}

var errJournal = errors.New("fanout: journal")

// replay fills res from the journal if it holds a success for t, and
// reports whether it did, or fails res if the journal cannot tell.
func (r *run[T]) replay(ctx context.Context, t Task[T], res *Result[T]) bool {
	e, ok, err := r.cfg.journal.Lookup(ctx, t.Key)
	switch {
	case err != nil:
		res.Err = wrap(errJournal, ": ", err)
		return true
	case !ok || !e.OK():
		return false
	}
	if err := r.codec().Unmarshal(e.Value, &res.Value); err != nil {
		res.Err = wrap(errJournal, ": ", fmt.Errorf("decode %q: %w", t.Key, err))
		return true
	}
	res.Attempts, res.Cost, res.Replayed = e.Attempts, e.Cost, true
	return true
}

// record writes res to the journal, unless it was skipped: a key that
// never ran has nothing to record.
func (r *run[T]) record(ctx context.Context, res *Result[T]) {
	if res.Replayed || errors.Is(res.Err, ErrSkipped) || errors.Is(res.Err, errJournal) {
		return
	}
	e := Entry{Attempts: res.Attempts, Cost: res.Cost}
	if res.Err != nil {
		e.Err, e.Kind = res.Err.Error(), ErrorKind(res.Err)
	} else {
		v, err := r.codec().Marshal(res.Value)
		if err != nil {
			res.Err = wrap(errJournal, ": ", fmt.Errorf("encode %q: %w", res.Key, err))
			return
		}
		e.Value = v
	}
	if err := r.cfg.journal.Record(context.WithoutCancel(ctx), res.Key, e); err != nil {
		res.Err = wrap(errJournal, ": ", err)
	}
}

func (r *run[T]) codec() Codec {
	if r.cfg.codec != nil {
		return r.cfg.codec
	}
	return jsonCodec{}
}

// MemoryJournal is a [Journal] in memory: for tests, and for reruns within
// one process. NewMemoryJournal makes one; the zero value is not usable.
type MemoryJournal struct {
	mu      sync.Mutex
	entries map[string]Entry
}

// NewMemoryJournal returns an empty MemoryJournal.
func NewMemoryJournal() *MemoryJournal { return &MemoryJournal{entries: map[string]Entry{}} }

// Lookup returns key's entry.
func (m *MemoryJournal) Lookup(_ context.Context, key string) (Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	return e, ok, nil
}

// Record stores key's entry.
func (m *MemoryJournal) Record(_ context.Context, key string, e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[key] = e
	return nil
}
