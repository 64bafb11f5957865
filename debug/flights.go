package fanoutdebug

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// flights are a run's keys in flight, in shards so that the workers of a
// run seldom wait for each other: each hook locks the shard of its key
// alone. At most cap keys are followed; the keys beyond are counted.
type flights struct {
	shards    [numShards]shard
	cap       int64
	followed  atomic.Int64
	untracked atomic.Int64
}

const numShards = 16

type shard struct {
	mu    sync.Mutex
	keys  map[string]*flight
	spare []*flight // ended flights, for reuse
	_     [24]byte  // a shard to a cache line
}

// flight is a key in flight.
type flight struct {
	start        time.Time
	attemptStart time.Time
	retryAt      time.Time // when the retry's wait ends
	attempt      int
	copies       int // attempts running now
	lastErr      error
}

func newFlights(cap int) *flights {
	return &flights{cap: int64(cap)}
}

// shard returns the shard of key, by an FNV-1a hash of its last 8 bytes,
// where keys made of a prefix and a number or an ID differ: a third of the
// cost of hash/maphash on short keys. Keys that collide share a lock, no
// more.
func (fs *flights) shard(key string) *shard {
	h := uint32(2166136261)
	for i := max(0, len(key)-8); i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &fs.shards[h%numShards]
}

// begin follows key from now on.
func (fs *flights) begin(key string, now time.Time) {
	if fs.followed.Add(1) > fs.cap {
		fs.followed.Add(-1)
		fs.untracked.Add(1)
		return
	}
	s := fs.shard(key)
	s.mu.Lock()
	if s.keys == nil {
		s.keys = make(map[string]*flight)
	}
	f := s.keys[key]
	if f != nil { // a lazy source may repeat a key: follow the latest
		fs.followed.Add(-1)
	} else if n := len(s.spare); n > 0 {
		f, s.spare = s.spare[n-1], s.spare[:n-1]
	} else {
		f = new(flight)
	}
	*f = flight{start: now}
	s.keys[key] = f
	s.mu.Unlock()
}

// update calls fn with key's flight, if key is followed.
func (fs *flights) update(key string, fn func(*flight)) {
	s := fs.shard(key)
	s.mu.Lock()
	if f := s.keys[key]; f != nil {
		fn(f)
	}
	s.mu.Unlock()
}

// end stops following key.
func (fs *flights) end(key string) {
	s := fs.shard(key)
	s.mu.Lock()
	f := s.keys[key]
	if f != nil {
		delete(s.keys, key)
		*f = flight{}
		s.spare = append(s.spare, f)
	}
	s.mu.Unlock()
	if f != nil {
		fs.followed.Add(-1)
	} else if fs.untracked.Load() > 0 {
		// Beyond the cap, a key not followed is taken to be one that
		// started; a key skipped before its start may be miscounted.
		fs.untracked.Add(-1)
	}
}

// count returns how many keys are in flight.
func (fs *flights) count() int {
	n := int(max(fs.untracked.Load(), 0))
	for i := range fs.shards {
		s := &fs.shards[i]
		s.mu.Lock()
		n += len(s.keys)
		s.mu.Unlock()
	}
	return n
}

// list returns at most max keys in flight at now, the longest first.
func (fs *flights) list(now time.Time, max int) []KeyInFlight {
	type keyed struct {
		key string
		f   flight
	}
	var all []keyed
	for i := range fs.shards {
		s := &fs.shards[i]
		s.mu.Lock()
		for k, f := range s.keys {
			all = append(all, keyed{k, *f})
		}
		s.mu.Unlock()
	}
	slices.SortFunc(all, func(a, b keyed) int { return cmp.Or(a.f.start.Compare(b.f.start), cmp.Compare(a.key, b.key)) })
	all = all[:min(len(all), max)]
	out := make([]KeyInFlight, len(all))
	for i, k := range all {
		out[i] = k.f.view(k.key, now)
	}
	return out
}

// clear lets go of every flight, at the run's end.
func (fs *flights) clear() {
	for i := range fs.shards {
		s := &fs.shards[i]
		s.mu.Lock()
		s.keys, s.spare = nil, nil
		s.mu.Unlock()
	}
	fs.followed.Store(0)
	fs.untracked.Store(0)
}

func (f *flight) view(key string, now time.Time) KeyInFlight {
	k := KeyInFlight{Key: clip(key), State: "waiting", Attempt: f.attempt, Copies: f.copies,
		ForMS: ms(now.Sub(f.start)), LastError: errText(f.lastErr)}
	switch {
	case f.copies > 0:
		k.State, k.AttemptMS = "running", ms(now.Sub(f.attemptStart))
	case f.retryAt.After(now):
		k.State, k.RetryInMS = "retry wait", ms(f.retryAt.Sub(now))
	}
	return k
}
