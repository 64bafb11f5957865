package main

import (
	"math"
	"strconv"
)

// cdfChart draws each policy's fan-out latency distribution as 1 − CDF
// on log-log axes: the fraction of fan-outs slower than x, which puts
// p99 and p99.9 where they can be read.
func cdfChart(curves []*curve) *svg {
	const width, height, left, right, top, bottom = 820.0, 480.0, 110.0, 30.0, 40.0, 130.0
	s := newSVG(width, height)
	s.text(width/2, 22, "middle", `font-size="15" font-weight="bold"`, "100-way fan-out latency: fraction of fan-outs slower than x (1 − CDF)")
	plotW, plotH := width-left-right, height-top-bottom
	const xLo, xHi, yLo, yHi = 10.0, 3000.0, 1e-4, 1.0 // ms; fraction
	xOf := func(ms float64) float64 {
		return left + plotW*math.Log10(math.Max(ms, xLo)/xLo)/math.Log10(xHi/xLo)
	}
	yOf := func(f float64) float64 {
		return top + plotH*math.Log10(yHi/math.Max(f, yLo))/math.Log10(yHi/yLo)
	}
	for _, ms := range []float64{10, 20, 50, 100, 200, 500, 1000, 2000} {
		s.line(xOf(ms), top, xOf(ms), top+plotH, "#ddd", 1, "")
		s.text(xOf(ms), top+plotH+16, "middle", `fill="#555"`, strconv.FormatFloat(ms, 'f', -1, 64)+" ms")
	}
	for f, label := yHi, []string{"1", "0.1 (p90)", "0.01 (p99)", "0.001 (p99.9)", "0.0001"}; f >= yLo*0.999; f /= 10 {
		s.line(left, yOf(f), left+plotW, yOf(f), "#ddd", 1, "")
		s.text(left-4, yOf(f)+4, "end", `fill="#555"`, label[0])
		label = label[1:]
	}
	s.text(left+plotW/2, top+plotH+34, "middle", "", "fan-out latency (log scale)")
	for i, c := range curves {
		var xs, ys []float64
		for j, q := range c.quantiles {
			if 1-q < yLo*0.999 {
				continue
			}
			xs = append(xs, xOf(c.latencyMS[j]))
			ys = append(ys, yOf(1-q))
		}
		colour := palette[i%len(palette)]
		s.polyline(xs, ys, colour, 2)
		ly := top + plotH + 54 + float64(i)*18
		s.line(left, ly-4, left+24, ly-4, colour, 3, "")
		s.text(left+30, ly, "start", "", c.name)
	}
	return s
}
