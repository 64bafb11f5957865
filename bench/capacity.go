package bench

import (
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Capacity is the hidden capacity of a [CapacityServer]: a concurrency
// ceiling and a rate ceiling, as an LLM API has (concurrent requests and
// requests per minute), with a latency that grows as the requests in
// service near the ceiling.
type Capacity struct {
	// Concurrency is how many requests the server serves at once; one
	// more is answered 503 at once.
	Concurrency int
	// Rate is how many requests a second the server admits, from a token
	// bucket of Burst; one more is answered 429 at once, with the time
	// until the next token in retry-after-ms.
	Rate  float64
	Burst int
	// Latency is the service time of a lone request. With n requests in
	// service it is Latency × (1 + (n/Concurrency)²), times a lognormal
	// noise of σ = 0.1: twice as long at the ceiling.
	Latency time.Duration
}

// DefaultCapacity is the service of the limit benchmarks: 32 requests at
// once, 360 a second, 40 ms alone. The rate binds first: at 20 requests
// in flight, each takes 56 ms and the rate reaches 360 a second; at the
// concurrency ceiling it would be 400.
func DefaultCapacity() Capacity {
	return Capacity{Concurrency: 32, Rate: 360, Burst: 36, Latency: 40 * time.Millisecond}
}

// Scaled returns c with both ceilings multiplied by f.
func (c Capacity) Scaled(f float64) Capacity {
	c.Concurrency = max(1, int(math.Round(float64(c.Concurrency)*f)))
	c.Rate *= f
	c.Burst = max(1, int(math.Round(float64(c.Burst)*f)))
	return c
}

// latency is the mean service time with n requests in service.
func (c Capacity) latency(n int) time.Duration {
	x := float64(n) / float64(c.Concurrency)
	return time.Duration(float64(c.Latency) * (1 + x*x))
}

// throughputAt is the rate n requests kept in flight would make.
func (c Capacity) throughputAt(n int) float64 { return float64(n) / c.latency(n).Seconds() }

// Throughput is the hidden capacity in successful requests a second: the
// most a client can get without an overload answer, the lower of the rate
// ceiling and the best the concurrency ceiling allows.
func (c Capacity) Throughput() float64 {
	return min(c.Rate, c.throughputAt(c.Concurrency))
}

// RightLimit is the fixed concurrency limit that reaches the hidden
// capacity without passing it: what a user who knew it would set.
func (c Capacity) RightLimit() int {
	n := 1
	for n < c.Concurrency && c.throughputAt(n+1) <= c.Rate {
		n++
	}
	return n
}

// Bin counts the answers of a CapacityServer in one BinWidth of time, by
// the time they were sent.
type Bin struct{ OK, TooMany, Unavailable int }

// Overload is the number of 429 and 503 answers.
func (b Bin) Overload() int { return b.TooMany + b.Unavailable }

// BinWidth is the time resolution of a CapacityServer's counts.
const BinWidth = 100 * time.Millisecond

// CapacityServer is an HTTP service with a hidden [Capacity], which
// SetCapacity may change while it runs. It counts its answers in bins of
// BinWidth from its start. A CapacityServer is safe for concurrent use.
type CapacityServer struct {
	mu       sync.Mutex
	c        Capacity
	start    time.Time
	inFlight int
	tokens   float64
	last     time.Time // when tokens was last topped up
	bins     []Bin
	rng      *rand.Rand
}

// NewCapacityServer returns a server with capacity c, its clock starting
// now.
func NewCapacityServer(c Capacity) *CapacityServer {
	now := time.Now()
	return &CapacityServer{c: c, start: now, last: now, tokens: float64(c.Burst), rng: rand.New(rand.NewPCG(1, 2))}
}

// SetCapacity changes the hidden capacity from now on.
func (s *CapacityServer) SetCapacity(c Capacity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refill(time.Now())
	s.c = c
	s.tokens = min(s.tokens, float64(c.Burst))
}

// Bins returns the counts so far, one Bin per BinWidth since the start.
func (s *CapacityServer) Bins() []Bin {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Bin(nil), s.bins...)
}

// Start is when the server's clock started.
func (s *CapacityServer) Start() time.Time { return s.start }

// ServeHTTP answers 503 above the concurrency ceiling, 429 above the rate
// ceiling, and otherwise 200 after the service time.
func (s *CapacityServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d, wait, code := s.admit(time.Now())
	switch code {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After-Ms", strconv.FormatInt(ceilDiv(wait, time.Millisecond), 10))
		fallthrough
	case http.StatusServiceUnavailable:
		w.WriteHeader(code)
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		s.done(true)
		w.WriteHeader(http.StatusOK)
	case <-r.Context().Done():
		s.done(false)
	}
}

// admit decides a request arriving at now: its service time, or the
// overload status and, for a 429, the time until the next token.
func (s *CapacityServer) admit(now time.Time) (service, wait time.Duration, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refill(now)
	switch {
	case s.inFlight >= s.c.Concurrency:
		s.count(func(b *Bin) { b.Unavailable++ })
		return 0, 0, http.StatusServiceUnavailable
	case s.tokens < 1:
		s.count(func(b *Bin) { b.TooMany++ })
		return 0, time.Duration((1 - s.tokens) / s.c.Rate * float64(time.Second)), http.StatusTooManyRequests
	}
	s.tokens--
	s.inFlight++
	noise := math.Exp(0.1 * s.rng.NormFloat64())
	return time.Duration(float64(s.c.latency(s.inFlight)) * noise), 0, http.StatusOK
}

// done ends a request in service, counting it if it was answered.
func (s *CapacityServer) done(answered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight--
	if answered {
		s.count(func(b *Bin) { b.OK++ })
	}
}

// refill tops the token bucket up to now.
func (s *CapacityServer) refill(now time.Time) {
	if now.After(s.last) {
		s.tokens = min(float64(s.c.Burst), s.tokens+now.Sub(s.last).Seconds()*s.c.Rate)
		s.last = now
	}
}

// count applies f to the bin of now.
func (s *CapacityServer) count(f func(*Bin)) {
	i := int(time.Since(s.start) / BinWidth)
	for len(s.bins) <= i {
		s.bins = append(s.bins, Bin{})
	}
	f(&s.bins[i])
}
