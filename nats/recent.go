package fanoutnats

// recentSet remembers the last n ids added, in bounded memory. It is not
// safe for concurrent use.
type recentSet struct {
	ring []string
	next int
	set  map[string]struct{}
}

func newRecentSet(n int) recentSet {
	return recentSet{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

func (r *recentSet) add(id string) {
	if _, ok := r.set[id]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % len(r.ring)
	r.set[id] = struct{}{}
}

func (r *recentSet) has(id string) bool {
	_, ok := r.set[id]
	return ok
}
