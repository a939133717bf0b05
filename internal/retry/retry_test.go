package retry

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackoffDoublesUpToItsMaxAndResets(t *testing.T) {
	var b Backoff
	var got []time.Duration
	for range 8 {
		got = append(got, b.Next())
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms}, got)
	b.Reset()
	assert.Equal(t, 100*ms, b.Next())

	c := Backoff{First: 200 * ms, Max: 2 * time.Second}
	assert.Equal(t, []time.Duration{200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2000 * ms}, []time.Duration{c.Next(), c.Next(), c.Next(), c.Next(), c.Next()})
}

func TestSleepEndsWhenDoneCloses(t *testing.T) {
	done := make(chan struct{})
	close(done)
	assert.False(t, Sleep(done, time.Hour))
	assert.True(t, Sleep(make(chan struct{}), time.Millisecond))
}
