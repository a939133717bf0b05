package events

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// ChainKey signs chain links.
type ChainKey []byte

// ErrShortChainKey is returned for a signing key shorter than 32 bytes.
var ErrShortChainKey = errors.New("audit signing key must be at least 32 bytes")

// NewChainKey checks a signing key.
func NewChainKey(b []byte) (ChainKey, error) {
	if len(b) < 32 {
		return nil, ErrShortChainKey
	}
	return ChainKey(bytes.Clone(b)), nil
}

// Sign is a link's signature.
func (k ChainKey) Sign(org uuid.UUID, seq, position int64, hash []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("chatbotd.audit-chain.v1"))
	m.Write(org[:])
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(seq)))
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(position)))
	m.Write(hash)
	return m.Sum(nil)
}

// EventHash is the SHA-256 of an event as stored.
func EventHash(e Envelope) []byte {
	meta := e.rawMetadata
	if meta == nil {
		meta, _ = json.Marshal(e.Metadata)
	}
	version, data := e.SchemaVersion, e.Data
	if e.stored != nil {
		version, data = e.stored.schemaVersion, e.stored.data
	}
	str := func(id *uuid.UUID) string {
		if id == nil {
			return ""
		}
		return id.String()
	}
	// A JSON array of strings: unambiguous field boundaries, and stable.
	fields, _ := json.Marshal([]string{
		e.ID.String(), e.Type, strconv.Itoa(version), e.StreamType, e.StreamID.String(),
		strconv.Itoa(e.StreamVersion), strconv.FormatInt(e.Position, 10), str(e.OrganizationID),
		e.OccurredAt.UTC().Format(time.RFC3339Nano), e.Actor.Type, str(e.Actor.ID), e.CorrelationID,
		e.CausationID, e.RequestID, string(meta), string(data),
	})
	h := sha256.Sum256(fields)
	return h[:]
}

// LinkHash is a link's hash: it follows from the previous link's hash (zeros for the
// first) and the event's.
func LinkHash(prev, eventHash []byte, seq, position int64) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(eventHash)
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(seq)))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(position)))
	return h.Sum(nil)
}
