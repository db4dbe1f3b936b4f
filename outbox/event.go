package outbox

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"
	"unicode/utf8"
)

// ContentTypeJSON is the content type of an Event whose ContentType is empty.
const ContentTypeJSON = "application/json"

// MaxAggregateLen bounds Event.Aggregate: it becomes the last part of a Kafka
// topic name, and Kafka allows 249 characters for the whole name.
const MaxAggregateLen = 200

// Event is one domain event, written inside the transaction that changes the
// aggregate and published to Kafka by capture if and only if that transaction
// commits.
//
// On Kafka the event becomes one message on topic
// <outbox topic prefix>.<Aggregate> with key AggregateID (so the events of one
// aggregate stay in order on one partition), value Payload exactly as given,
// and headers "id", "type", "aggregatetype", "content-type", the stream
// position "cdcsync.position" and every entry of Headers.
type Event struct {
	// ID identifies the event so consumers can drop redeliveries. Empty
	// means Publish generates a random (version 4) UUID; a given ID must be
	// a UUID and is stored in lower case. Set it yourself (NewID) when the
	// caller needs to know it.
	ID string
	// Aggregate is the kind of entity the event is about ("order"); it
	// names the topic, so it may hold only ASCII letters, digits, '.', '_'
	// and '-'. Debezium calls it aggregatetype.
	Aggregate string
	// AggregateID identifies the entity ("42"); it is the Kafka key.
	AggregateID string
	// Type names what happened ("OrderCreated").
	Type string
	// Payload is the message value, passed through unchanged. It must be
	// valid JSON unless ContentType names a non-JSON type.
	Payload []byte
	// ContentType is a MIME type; empty means application/json. Types
	// other than application/json and */*+json are opaque bytes (message
	// mode only: the outbox table stores payloads as jsonb).
	ContentType string
	// Headers become Kafka headers. The names id, type, aggregatetype,
	// aggregateid, content-type and anything starting with "cdcsync." are
	// reserved.
	Headers map[string]string
}

// Validation errors. Every error Publish returns for a malformed event (and
// that capture reports for a malformed one found in the WAL) matches
// ErrInvalidEvent and one of the more precise errors below with errors.Is,
// and is a *ValidationError for errors.As.
var (
	ErrInvalidEvent       = errors.New("invalid outbox event")
	ErrMissingAggregate   = errors.New("aggregate is required")
	ErrInvalidAggregate   = errors.New("aggregate is not usable in a topic name")
	ErrMissingAggregateID = errors.New("aggregate id is required")
	ErrMissingType        = errors.New("type is required")
	ErrMissingID          = errors.New("event id is required")
	ErrInvalidID          = errors.New("event id is not a UUID")
	ErrInvalidPayload     = errors.New("payload is not valid JSON")
	ErrPayloadTooLarge    = errors.New("payload is too large")
	ErrInvalidContentType = errors.New("content type is not usable")
	ErrInvalidHeader      = errors.New("header is not usable")
	ErrInvalidText        = errors.New("text is not valid UTF-8")
)

// ValidationError says which event is malformed and why.
type ValidationError struct {
	// Index is the event's position in the Publish call (0 elsewhere).
	Index int
	// inPublish says Index is meaningful (the error came from Publish).
	inPublish bool
	// ID is the event's id, when it has one.
	ID string
	// Field names the offending Event field.
	Field string
	// Err is one of the Err* values above.
	Err error
	// Detail adds specifics, such as the JSON syntax error.
	Detail string
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("outbox event")
	if e.inPublish {
		fmt.Fprintf(&b, " %d", e.Index)
	}
	if e.ID != "" {
		fmt.Fprintf(&b, " (id %s)", e.ID)
	}
	fmt.Fprintf(&b, ": %s: %v", e.Field, e.Err)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap lets errors.Is match both the precise error and ErrInvalidEvent.
func (e *ValidationError) Unwrap() []error { return []error{e.Err, ErrInvalidEvent} }

// reservedHeaders are the Kafka header names capture writes itself.
var reservedHeaders = map[string]bool{
	"id": true, "type": true, "aggregatetype": true, "aggregateid": true, "content-type": true,
}

// ReservedHeader reports whether name is a header capture sets itself, so an
// Event may not carry it.
func ReservedHeader(name string) bool {
	l := strings.ToLower(name)
	return reservedHeaders[l] || strings.HasPrefix(l, "cdcsync.")
}

// NewID returns a random version 4 UUID in its canonical lower-case form.
func NewID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], u[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], u[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], u[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], u[8:10])
	out[23] = '-'
	hex.Encode(out[24:], u[10:])
	return string(out[:])
}

// canonicalUUID returns s in lower case when it is a UUID in the 8-4-4-4-12
// form, the form Postgres prints, so both storage modes show the same id.
func canonicalUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", false
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return "", false
		}
	}
	return strings.ToLower(s), true
}

// IsJSONContentType reports whether ct (empty meaning the default) declares
// a JSON payload: application/json or a structured type ending in +json.
func IsJSONContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == ContentTypeJSON || strings.HasSuffix(mt, "+json")
}

// Validate checks everything Publish checks except the payload size limit,
// so a caller can test an event before opening a transaction. An empty ID is
// valid here (Publish fills it in).
func (e Event) Validate() error {
	invalid := func(field string, err error, detail string) error {
		return &ValidationError{ID: e.ID, Field: field, Err: err, Detail: detail}
	}
	if e.ID != "" {
		if _, ok := canonicalUUID(e.ID); !ok {
			return invalid("ID", ErrInvalidID, fmt.Sprintf("%q", e.ID))
		}
	}
	if e.Aggregate == "" {
		return invalid("Aggregate", ErrMissingAggregate, "")
	}
	if err := checkAggregate(e.Aggregate); err != "" {
		return invalid("Aggregate", ErrInvalidAggregate, err)
	}
	if e.AggregateID == "" {
		return invalid("AggregateID", ErrMissingAggregateID, "")
	}
	if !utf8.ValidString(e.AggregateID) {
		return invalid("AggregateID", ErrInvalidText, "")
	}
	if e.Type == "" {
		return invalid("Type", ErrMissingType, "")
	}
	if !utf8.ValidString(e.Type) {
		return invalid("Type", ErrInvalidText, "")
	}
	if e.ContentType != "" {
		if _, _, err := mime.ParseMediaType(e.ContentType); err != nil {
			return invalid("ContentType", ErrInvalidContentType, err.Error())
		}
	}
	if IsJSONContentType(e.ContentType) {
		if detail := checkJSON(e.Payload); detail != "" {
			return invalid("Payload", ErrInvalidPayload, detail)
		}
	}
	for name, value := range e.Headers {
		switch {
		case name == "":
			return invalid("Headers", ErrInvalidHeader, "empty name")
		case ReservedHeader(name):
			return invalid("Headers", ErrInvalidHeader, fmt.Sprintf("%q is reserved", name))
		case !utf8.ValidString(name) || !utf8.ValidString(value):
			return invalid("Headers", ErrInvalidHeader, fmt.Sprintf("%q is not valid UTF-8", name))
		}
	}
	return nil
}

// checkAggregate returns why name cannot end a topic name, or "".
func checkAggregate(name string) string {
	if len(name) > MaxAggregateLen {
		return fmt.Sprintf("longer than %d characters", MaxAggregateLen)
	}
	if name == "dlq" {
		// <prefix>.dlq is where capture puts events it cannot publish.
		return `"dlq" is reserved for the dead-letter topic`
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Sprintf("%q: only ASCII letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return ""
}

// checkJSON returns why p is not one valid UTF-8 JSON value, or "".
func checkJSON(p []byte) string {
	if len(p) == 0 {
		return "empty"
	}
	if !utf8.Valid(p) {
		return "not valid UTF-8"
	}
	if !json.Valid(p) {
		var v any
		if err := json.Unmarshal(p, &v); err != nil {
			return err.Error()
		}
		return "syntax error"
	}
	return ""
}

// prepare fills in the defaults Publish applies (ID, lower-case ID) and
// validates the result.
func (e Event) prepare(index, maxPayload int) (Event, error) {
	if e.ID == "" {
		e.ID = NewID()
	}
	err := e.Validate()
	var ve *ValidationError
	if errors.As(err, &ve) {
		ve.Index, ve.inPublish = index, true
		return e, ve
	}
	if err != nil {
		return e, err
	}
	e.ID, _ = canonicalUUID(e.ID)
	if maxPayload > 0 && len(e.Payload) > maxPayload {
		return e, &ValidationError{Index: index, inPublish: true, ID: e.ID, Field: "Payload", Err: ErrPayloadTooLarge,
			Detail: fmt.Sprintf("%d bytes, the limit is %d", len(e.Payload), maxPayload)}
	}
	return e, nil
}
