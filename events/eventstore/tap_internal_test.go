package eventstore

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/events"
)

// tapBatch is a batch of events at the given positions, all of transaction txid.
func tapBatch(txid uint64, positions ...int64) ([]events.Envelope, Checkpoint) {
	out := make([]events.Envelope, len(positions))
	for i, p := range positions {
		out[i] = events.Envelope{Position: p}
	}
	return out, Checkpoint{TransactionID: txid, Position: positions[len(positions)-1]}
}

func positionsOf(batch []events.Envelope) []int64 {
	var out []int64
	for _, e := range batch {
		out = append(out, e.Position)
	}
	return out
}

func TestATapHandsOnWhatFollowsACheckpoint(t *testing.T) {
	start := Checkpoint{TransactionID: 9, Position: 10}
	a, afterA := tapBatch(10, 11, 12, 13)
	b, afterB := tapBatch(11, 14, 15)
	c, afterC := tapBatch(12, 16)

	cases := []struct {
		name     string
		from     Checkpoint
		limit    int
		ok       bool
		want     []int64
		wantNext Checkpoint
	}{
		{name: "from the first batch's start, whole batches up to the limit", from: start, limit: 4, ok: true,
			want: []int64{11, 12, 13, 14, 15}, wantNext: afterB},
		{name: "from an event inside a batch: the rest of it", from: Checkpoint{TransactionID: 10, Position: 12}, limit: 1, ok: true,
			want: []int64{13}, wantNext: afterA},
		{name: "from a batch's end", from: afterA, limit: 100, ok: true, want: []int64{14, 15, 16}, wantNext: afterC},
		{name: "from the last batch's end: nothing held", from: afterC, limit: 100},
		{name: "from before what the tap holds", from: Checkpoint{TransactionID: 8, Position: 3}, limit: 100},
		{name: "from a position the batch does not hold", from: Checkpoint{TransactionID: 10, Position: 99}, limit: 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tap := &Tap{}
			tap.offer(start, afterA, a)
			tap.offer(afterA, afterB, b)
			tap.offer(afterB, afterC, c)
			got, next, ok := tap.take(tc.from, tc.limit)
			assert.Equal(t, tc.ok, ok)
			if !tc.ok {
				assert.Empty(t, got)
				assert.Equal(t, tc.from, next)
				return
			}
			assert.Equal(t, tc.want, positionsOf(got))
			assert.Equal(t, tc.wantNext, next)
		})
	}
}

// A batch that does not follow the last one (the relay began again from its checkpoint)
// starts the tap over; batches before the checkpoint taken from are let go; and the tap
// keeps no more than tapHolds events.
func TestATapKeepsOneRunOfBatchesAndLetsGoOfTheOldest(t *testing.T) {
	tap := &Tap{}
	start := Checkpoint{TransactionID: 1, Position: 1}
	a, afterA := tapBatch(2, 2, 3)
	tap.offer(start, afterA, a)
	again, afterAgain := tapBatch(2, 2, 3, 4)
	tap.offer(start, afterAgain, again) // from start again, not from afterA
	got, next, ok := tap.take(start, 100)
	assert.True(t, ok)
	assert.Equal(t, []int64{2, 3, 4}, positionsOf(got))
	assert.Equal(t, afterAgain, next)

	b, afterB := tapBatch(3, 5)
	tap.offer(afterAgain, afterB, b)
	_, _, ok = tap.take(afterAgain, 100)
	assert.True(t, ok)
	assert.Equal(t, 1, tap.held, "the batch before the checkpoint is let go")

	tap = &Tap{}
	from := start
	for i := range tapHolds/100 + 5 {
		batch := make([]events.Envelope, 100)
		for k := range batch {
			batch[k].Position = int64(i*100 + k + 2)
		}
		next := Checkpoint{TransactionID: uint64(i + 2), Position: batch[99].Position}
		tap.offer(from, next, batch)
		from = next
	}
	assert.LessOrEqual(t, tap.held, tapHolds)
	_, _, ok = tap.take(start, 100)
	assert.False(t, ok, "the oldest batches were let go")

	var none *Tap
	none.offer(start, afterA, a)
	_, _, ok = none.take(start, 100)
	assert.False(t, ok)
}
