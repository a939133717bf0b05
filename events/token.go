package events

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Meta is the context every event of one append shares.
type Meta struct {
	Actor         Actor
	CorrelationID string
	CausationID   string
	RequestID     string
	Metadata      Metadata
}

// AppendResult is the consistency token of the API contract.
type AppendResult struct {
	StreamType string    `json:"-"`
	StreamID   uuid.UUID `json:"stream_id"`
	Version    int       `json:"stream_version"`
	Position   int64     `json:"position"`
	// OccurredAt is the time the events were stamped with.
	OccurredAt time.Time `json:"-"`
}

// Token is the consistency token's header form: "<stream_type>:<stream_id>:<version>:<position>".
func (r AppendResult) Token() string {
	return fmt.Sprintf("%s:%s:%d:%d", r.StreamType, r.StreamID, r.Version, r.Position)
}

// ParseToken reads a consistency token.
func ParseToken(s string) (AppendResult, error) {
	var r AppendResult
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] == "" {
		return r, errors.New("consistency token must be <stream_type>:<stream_id>:<version>:<position>")
	}
	var err error
	if r.StreamID, err = uuid.Parse(parts[1]); err != nil {
		return r, errors.New("consistency token: bad stream id")
	}
	if r.Version, err = strconv.Atoi(parts[2]); err != nil || r.Version < 0 {
		return r, errors.New("consistency token: bad version")
	}
	if r.Position, err = strconv.ParseInt(parts[3], 10, 64); err != nil || r.Position < 0 {
		return r, errors.New("consistency token: bad position")
	}
	r.StreamType = parts[0]
	return r, nil
}
