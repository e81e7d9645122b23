package freshness

import (
	"math"
	"sort"
	"strconv"
	"strings"
)

// Hist is a sparse log-scale histogram of response times in milliseconds:
// bucket 0 holds values below 1 ms, bucket i ≥ 1 values in
// [1.1^(i-1), 1.1^i). Percentiles read from it are within about 10 %.
// It is stored as text, "index:count" pairs separated by commas.
type Hist map[int]int64

const histGrowth = 1.1

var logGrowth = math.Log(histGrowth)

func bucketOf(ms float64) int {
	if ms < 1 {
		return 0
	}
	i := int(math.Floor(math.Log(ms)/logGrowth)) + 1
	return min(i, 400)
}

// Add counts one value.
func (h Hist) Add(ms float64) { h[bucketOf(ms)]++ }

// Merge adds o's counts to h.
func (h Hist) Merge(o Hist) {
	for k, v := range o {
		h[k] += v
	}
}

// Count is the number of values.
func (h Hist) Count() int64 {
	var n int64
	for _, v := range h {
		n += v
	}
	return n
}

// Quantile returns the q-quantile (0 < q ≤ 1) as the upper bound of its
// bucket, in whole milliseconds; ok is false for an empty histogram.
func (h Hist) Quantile(q float64) (ms int64, ok bool) {
	n := h.Count()
	if n == 0 {
		return 0, false
	}
	rank := int64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	keys := h.keys()
	var seen int64
	for _, k := range keys {
		seen += h[k]
		if seen >= rank {
			if k == 0 {
				return 1, true
			}
			return int64(math.Round(math.Pow(histGrowth, float64(k)))), true
		}
	}
	return 0, false
}

func (h Hist) keys() []int {
	keys := make([]int, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

// String encodes the histogram.
func (h Hist) String() string {
	var b strings.Builder
	for i, k := range h.keys() {
		if h[k] == 0 {
			continue
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(k))
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(h[k], 10))
	}
	return b.String()
}

// ParseHist decodes a histogram; malformed pairs are skipped.
func ParseHist(s string) Hist {
	h := Hist{}
	for _, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(p, ":")
		if !ok {
			continue
		}
		ki, err1 := strconv.Atoi(k)
		vi, err2 := strconv.ParseInt(v, 10, 64)
		if err1 == nil && err2 == nil && vi > 0 {
			h[ki] += vi
		}
	}
	return h
}
