package main

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// benchSet holds every run of every benchmark: impl → scenario → unit →
// values, and the order in which impls and scenarios first appeared.
type benchSet struct {
	impls, scenarios []string
	values           map[string]map[string]map[string][]float64
}

// median returns the median of impl's unit in scenario, and false if the
// file has no such figure.
func (s *benchSet) median(impl, scenario, unit string) (float64, bool) {
	vs := s.values[impl][scenario][unit]
	if len(vs) == 0 {
		return 0, false
	}
	vs = slices.Sorted(slices.Values(vs))
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

// parseBench reads lines such as
//
//	BenchmarkFloor/body=trivial/n=10/l=8/timeout=false-2  52232  2292 ns/op  229.2 ns/task
//
// The benchmark's first name element is the implementation, the rest the
// scenario; the -GOMAXPROCS suffix is dropped.
func parseBench(r io.Reader) (*benchSet, error) {
	s := &benchSet{values: map[string]map[string]map[string][]float64{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 {
			continue
		}
		name := fields[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		impl, scenario, _ := strings.Cut(strings.TrimPrefix(name, "Benchmark"), "/")
		if s.values[impl] == nil {
			s.values[impl] = map[string]map[string][]float64{}
			s.impls = append(s.impls, impl)
		}
		if !slices.Contains(s.scenarios, scenario) {
			s.scenarios = append(s.scenarios, scenario)
		}
		if s.values[impl][scenario] == nil {
			s.values[impl][scenario] = map[string][]float64{}
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("chart: %s: value %q: %w", fields[0], fields[i], err)
			}
			unit := fields[i+1]
			s.values[impl][scenario][unit] = append(s.values[impl][scenario][unit], v)
		}
	}
	return s, sc.Err()
}

// curve is one policy's latency quantiles from cmd/tail.
type curve struct {
	name      string
	quantiles []float64
	latencyMS []float64
}

// parseTail reads cmd/tail's policy,quantile,latency_ms rows.
func parseTail(r io.Reader) ([]*curve, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	var curves []*curve
	for i, row := range rows {
		if i == 0 || len(row) != 3 {
			continue
		}
		q, err1 := strconv.ParseFloat(row[1], 64)
		l, err2 := strconv.ParseFloat(row[2], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("chart: tail CSV row %d: %q", i+1, row)
		}
		if len(curves) == 0 || curves[len(curves)-1].name != row[0] {
			curves = append(curves, &curve{name: row[0]})
		}
		c := curves[len(curves)-1]
		c.quantiles = append(c.quantiles, q)
		c.latencyMS = append(c.latencyMS, l)
	}
	return curves, nil
}
