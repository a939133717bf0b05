package events

import "fmt"

// FrameMax is the most events the relay puts in one frame. A frame is one broker message,
// and the projectors' consumer holds a prefetch of them: the cap bounds what a consumer
// holds in memory, while frames of a few dozen events already take most of the broker's
// per-message cost off each event (BENCHMARKS.md, "Frames").
const FrameMax = 64

// AppendFrame adds an encoded envelope (MarshalJSON's bytes) to frame, the body of a
// frame being built: a JSON array of envelopes, in the order the relay read them from the
// log. Close it with CloseFrame.
func AppendFrame(frame, envelope []byte) []byte {
	if len(frame) == 0 {
		frame = append(frame, '[')
	} else {
		frame = append(frame, ',')
	}
	return append(frame, envelope...)
}

// CloseFrame ends a frame that AppendFrame built.
func CloseFrame(frame []byte) []byte { return append(frame, ']') }

// DecodeFrame parses a frame's body into its envelopes, in order, each checked and
// upcast as DecodeEnvelope does. A frame with any envelope that does not decode is
// rejected whole: it is one message, dead-lettered as one.
func DecodeFrame(body []byte) ([]Envelope, error) {
	var out []Envelope
	if err := decodeJSON(body, &out); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("decode frame: no events")
	}
	for i, e := range out {
		e, err := checkDecoded(e)
		if err != nil {
			return nil, fmt.Errorf("frame event %d: %w", i, err)
		}
		out[i] = e
	}
	return out, nil
}
