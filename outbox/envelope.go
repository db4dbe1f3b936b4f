package outbox

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
)

// The message mode stores an event as the content of a transactional logical
// decoding message, a JSON object named like the Debezium outbox columns:
//
//	{"id":"…","aggregatetype":"order","aggregateid":"42","type":"OrderCreated",
//	 "payload":{…},"headers":{"k":"v"}}
//
// A JSON payload is embedded byte for byte, so capture can hand the consumer
// exactly what the service gave. A non-JSON payload is a base64 string and
// the object has "content_type". Encoding and decoding live here so that the
// order service and capture cannot disagree on the format.

// ErrInvalidEnvelope reports message content that is not an outbox envelope.
var ErrInvalidEnvelope = errors.New("message is not an outbox envelope")

// EncodeMessage returns the logical decoding message content for e. It does
// not validate: Publish validates first, and tests use it to build malformed
// messages on purpose.
func EncodeMessage(e Event) []byte {
	buf := make([]byte, 0, 160+len(e.Payload)*4/3)
	buf = append(buf, `{"id":`...)
	buf = appendString(buf, e.ID)
	buf = append(buf, `,"aggregatetype":`...)
	buf = appendString(buf, e.Aggregate)
	buf = append(buf, `,"aggregateid":`...)
	buf = appendString(buf, e.AggregateID)
	buf = append(buf, `,"type":`...)
	buf = appendString(buf, e.Type)
	if IsJSONContentType(e.ContentType) {
		if e.ContentType != "" && e.ContentType != ContentTypeJSON {
			buf = append(buf, `,"content_type":`...)
			buf = appendString(buf, e.ContentType)
		}
		buf = append(buf, `,"payload":`...)
		buf = append(buf, e.Payload...)
	} else {
		buf = append(buf, `,"content_type":`...)
		buf = appendString(buf, e.ContentType)
		buf = append(buf, `,"payload":"`...)
		buf = base64.StdEncoding.AppendEncode(buf, e.Payload)
		buf = append(buf, '"')
	}
	if len(e.Headers) > 0 {
		buf = append(buf, `,"headers":{`...)
		names := make([]string, 0, len(e.Headers))
		for name := range e.Headers {
			names = append(names, name)
		}
		slices.Sort(names) // stable bytes for the same event
		for i, name := range names {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, name)
			buf = append(buf, ':')
			buf = appendString(buf, e.Headers[name])
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// wireEnvelope is the decoding view of the message content.
type wireEnvelope struct {
	ID            string            `json:"id"`
	AggregateType string            `json:"aggregatetype"`
	AggregateID   string            `json:"aggregateid"`
	Type          string            `json:"type"`
	ContentType   string            `json:"content_type"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers"`
}

// DecodeMessage parses logical decoding message content written by Publish
// and validates the event as Publish would, except that the ID must be
// present. Errors are *ValidationError values matching ErrInvalidEvent.
// The returned Event does not share memory with content.
func DecodeMessage(content []byte) (Event, error) {
	var w wireEnvelope
	if err := json.Unmarshal(content, &w); err != nil {
		return Event{}, &ValidationError{Field: "envelope", Err: ErrInvalidEnvelope, Detail: err.Error()}
	}
	e := Event{
		ID:          w.ID,
		Aggregate:   w.AggregateType,
		AggregateID: w.AggregateID,
		Type:        w.Type,
		ContentType: w.ContentType,
		Headers:     w.Headers,
	}
	if e.ID == "" {
		return e, &ValidationError{Field: "ID", Err: ErrMissingID}
	}
	if IsJSONContentType(w.ContentType) {
		// Unmarshal copies into RawMessage, so this does not alias content.
		e.Payload = w.Payload
	} else {
		var b64 string
		if err := json.Unmarshal(w.Payload, &b64); err != nil {
			return e, &ValidationError{ID: e.ID, Field: "Payload", Err: ErrInvalidEnvelope,
				Detail: "a " + w.ContentType + " payload must be a base64 string"}
		}
		p, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return e, &ValidationError{ID: e.ID, Field: "Payload", Err: ErrInvalidEnvelope, Detail: err.Error()}
		}
		e.Payload = p
	}
	if err := e.Validate(); err != nil {
		return e, err
	}
	e.ID, _ = canonicalUUID(e.ID)
	return e, nil
}

// appendString appends s as a JSON string. Unlike json.Marshal it leaves
// '<', '>' and '&' alone, so ids and names read the same on both sides.
func appendString(buf []byte, s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	return append(buf, bytes.TrimSuffix(b.Bytes(), []byte("\n"))...)
}
