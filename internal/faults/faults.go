// Package faults holds the fault-injection points of the chaos suite (cmd/chaos). They
// do something only in the chaos build (go build -tags chaos); in every other build they
// are empty functions the compiler removes, so production binaries carry none of it.
//
// In the chaos build they are driven by environment variables, read once:
//
//	CHAOS_CRASH_AT=point:n       the process kills itself with SIGKILL the n-th time it
//	                             reaches point (Crash): "projector.batch" (a projector's
//	                             batch is written, not committed) or "relay.batch" (a
//	                             relay batch is published and confirmed, its checkpoint
//	                             not saved)
//	CHAOS_DUPLICATE_DELIVERY=1   every consumed message is published again to its queue
//	                             once (Duplicate), so each is delivered twice
//	CHAOS_POISON=name:marker     projector name fails every event whose data contains
//	                             marker (Poisoned), so that event is dead-lettered
package faults

import (
	"bytes"
	"strconv"
	"strings"
)

// copyHeader marks a message that Duplicate published: it is not copied again.
const copyHeader = "x-chaos-copy"

type settings struct {
	crashPoint   string
	crashAfter   int64
	duplicate    bool
	poisonTarget string
	poisonMarker []byte
}

func parse(getenv func(string) string) settings {
	var s settings
	if point, n, ok := strings.Cut(getenv("CHAOS_CRASH_AT"), ":"); ok {
		if v, err := strconv.ParseInt(n, 10, 64); err == nil && v > 0 {
			s.crashPoint, s.crashAfter = point, v
		}
	}
	s.duplicate = getenv("CHAOS_DUPLICATE_DELIVERY") == "1"
	if name, marker, ok := strings.Cut(getenv("CHAOS_POISON"), ":"); ok && name != "" && marker != "" {
		s.poisonTarget, s.poisonMarker = name, []byte(marker)
	}
	return s
}

func (s settings) poisoned(projection string, data []byte) bool {
	return s.poisonTarget == projection && bytes.Contains(data, s.poisonMarker)
}
