package retry

import (
	"errors"
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

func TestHoldTriesAgainOnlyWhileTheErrorSaysSo(t *testing.T) {
	down := errors.New("down")
	broken := errors.New("broken")
	never := make(chan struct{})
	calls, waits := 0, 0
	out, err := Hold(never, func(err error) bool { return errors.Is(err, down) }, func(error, time.Duration) { waits++ },
		func() (int, error) {
			calls++
			if calls < 3 {
				return 0, down
			}
			return 42, nil
		})
	assert.NoError(t, err)
	assert.Equal(t, 42, out)
	assert.Equal(t, 3, calls)
	assert.Equal(t, 2, waits)

	calls = 0
	_, err = Hold(never, func(err error) bool { return errors.Is(err, down) }, nil, func() (int, error) { calls++; return 0, broken })
	assert.ErrorIs(t, err, broken, "another error is returned at once")
	assert.Equal(t, 1, calls)

	stopped := make(chan struct{})
	close(stopped)
	_, err = Hold(stopped, func(error) bool { return true }, nil, func() (int, error) { return 0, down })
	assert.ErrorIs(t, err, down, "a stopped hold returns the last failure")
}
