package events_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/events"
)

// An organization's bucket is part of the stream's contract (outside consumers split
// their work by the partition header): these values never change.
func TestPartitionBucketIsStable(t *testing.T) {
	org := uuid.MustParse("0b6e8f3c-2f4a-4c1e-9a57-3d2b8e1f6a90")
	assert.Equal(t, 34, events.PartitionBucket(&org))
	assert.Equal(t, 5, events.PartitionBucket(nil), "events of no organization: the nil uuid's bucket")
	nilOrg := uuid.Nil
	assert.Equal(t, events.PartitionBucket(nil), events.PartitionBucket(&nilOrg))
	assert.Equal(t, "34", events.PartitionValue(34))

	// Organizations spread over every bucket.
	seen := map[int]int{}
	for range 64 * 200 {
		org := uuid.New()
		seen[events.PartitionBucket(&org)]++
	}
	assert.Len(t, seen, events.PartitionBuckets)
	for b, n := range seen {
		assert.Greater(t, n, 100, "bucket %d", b)
	}
}
