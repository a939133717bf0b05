package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPickScenarios(t *testing.T) {
	all, err := pick("")
	require.NoError(t, err)
	assert.Len(t, all, len(scenarios))
	some, err := pick("redis-down, two-servers")
	require.NoError(t, err)
	assert.Equal(t, []string{"redis-down", "two-servers"}, []string{some[0].name, some[1].name})
	_, err = pick("redis-down,nope")
	assert.ErrorContains(t, err, `no scenario "nope"`)
}

// The soak's bound compares the last third with the middle third: a leak fails it, a
// warm-up or a plateau does not.
func TestGrowthBound(t *testing.T) {
	run := func(rss func(i int) float64, goroutines func(i int) int) map[string]bool {
		var s []sample
		for i := range 30 {
			s = append(s, sample{at: time.Duration(i) * time.Minute, rssMiB: rss(i), heapMiB: 20, goroutines: goroutines(i), fds: 40, pgConns: 20})
		}
		out := map[string]bool{}
		for _, r := range growth(s) {
			out[r.invariant] = r.ok
		}
		return out
	}
	flat := func(int) int { return 60 }
	warmup := run(func(i int) float64 { return float64(min(i, 8)) * 10 }, flat)
	assert.True(t, warmup["bounded resident memory"], "growth during the warm-up third, then a plateau")
	leak := run(func(i int) float64 { return 50 + float64(i*i) }, flat)
	assert.False(t, leak["bounded resident memory"], "memory that keeps growing")
	goroutineLeak := run(func(int) float64 { return 80 }, func(i int) int { return 60 + 5*i })
	assert.False(t, goroutineLeak["bounded goroutines"])
	assert.True(t, goroutineLeak["bounded open files"])
	assert.False(t, growth(make([]sample, 3))[0].ok, "too few samples tell nothing")
}

func TestStatusLine(t *testing.T) {
	assert.Equal(t, "no answer×3 200×5 503×2 418×1", statusLine(map[int]int{0: 3, 200: 5, 503: 2, 418: 1}))
	assert.Equal(t, map[int]int{200: 2, 503: 1}, diff(map[int]int{200: 7, 503: 1, 0: 3}, map[int]int{200: 5, 0: 3}))
}
