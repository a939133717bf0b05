package events

import (
	"hash/fnv"
	"strconv"

	"github.com/google/uuid"
)

// PartitionHeader is the AMQP header in which the relay gives each message its
// organization's bucket, "0" to "63" (PartitionBuckets). Partitioned projectors' queues
// are bound to buckets, so that all of an organization's events go to one queue and keep
// their order; an outside consumer may split its own work the same way.
const PartitionHeader = "partition"

// PartitionBuckets is how many buckets organizations are hashed into: the most partitions
// a projector can be split into. It is part of the stream's contract: never change it.
const PartitionBuckets = 64

// PartitionBucket is the bucket of an organization: FNV-1a of its id's 16 bytes, modulo
// PartitionBuckets. Events of no organization share the bucket of the nil uuid.
func PartitionBucket(org *uuid.UUID) int {
	id := uuid.Nil
	if org != nil {
		id = *org
	}
	h := fnv.New32a()
	_, _ = h.Write(id[:])
	return int(h.Sum32() % PartitionBuckets)
}

// bucketNames are the header values, made once: the relay stamps one on every message.
var bucketNames = func() (out [PartitionBuckets]string) {
	for i := range out {
		out[i] = strconv.Itoa(i)
	}
	return out
}()

// PartitionValue is the PartitionHeader value of bucket b.
func PartitionValue(b int) string { return bucketNames[b] }
