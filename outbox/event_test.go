package outbox

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func validEvent() Event {
	return Event{
		Aggregate:   "order",
		AggregateID: "42",
		Type:        "OrderCreated",
		Payload:     []byte(`{"item_id":7,"quantity":2}`),
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Event)
		want  error
		field string
	}{
		{"valid", func(*Event) {}, nil, ""},
		{"valid with id and headers", func(e *Event) {
			e.ID = "0E8B5F3A-1C2D-4E5F-8A9B-0C1D2E3F4A5B"
			e.Headers = map[string]string{"trace-id": "abc"}
		}, nil, ""},
		{"valid json null payload", func(e *Event) { e.Payload = []byte("null") }, nil, ""},
		{"valid +json type", func(e *Event) { e.ContentType = "application/cloudevents+json; charset=utf-8" }, nil, ""},
		{"valid opaque payload", func(e *Event) { e.ContentType = "text/plain"; e.Payload = []byte("not json") }, nil, ""},
		{"missing aggregate", func(e *Event) { e.Aggregate = "" }, ErrMissingAggregate, "Aggregate"},
		{"aggregate with space", func(e *Event) { e.Aggregate = "sales order" }, ErrInvalidAggregate, "Aggregate"},
		{"aggregate with slash", func(e *Event) { e.Aggregate = "a/b" }, ErrInvalidAggregate, "Aggregate"},
		{"aggregate dlq", func(e *Event) { e.Aggregate = "dlq" }, ErrInvalidAggregate, "Aggregate"},
		{"aggregate too long", func(e *Event) { e.Aggregate = strings.Repeat("a", MaxAggregateLen+1) }, ErrInvalidAggregate, "Aggregate"},
		{"missing aggregate id", func(e *Event) { e.AggregateID = "" }, ErrMissingAggregateID, "AggregateID"},
		{"aggregate id not utf-8", func(e *Event) { e.AggregateID = "\xff" }, ErrInvalidText, "AggregateID"},
		{"missing type", func(e *Event) { e.Type = "" }, ErrMissingType, "Type"},
		{"bad id", func(e *Event) { e.ID = "order-42-created" }, ErrInvalidID, "ID"},
		{"payload not json", func(e *Event) { e.Payload = []byte(`{"item_id":7,`) }, ErrInvalidPayload, "Payload"},
		{"payload empty", func(e *Event) { e.Payload = nil }, ErrInvalidPayload, "Payload"},
		{"payload two values", func(e *Event) { e.Payload = []byte(`{} {}`) }, ErrInvalidPayload, "Payload"},
		{"payload not utf-8", func(e *Event) { e.Payload = []byte("\"\xff\"") }, ErrInvalidPayload, "Payload"},
		{"declared json not json", func(e *Event) { e.ContentType = "application/json"; e.Payload = []byte("hello") }, ErrInvalidPayload, "Payload"},
		{"bad content type", func(e *Event) { e.ContentType = "json;;" }, ErrInvalidContentType, "ContentType"},
		{"reserved header", func(e *Event) { e.Headers = map[string]string{"id": "x"} }, ErrInvalidHeader, "Headers"},
		{"reserved header prefix", func(e *Event) { e.Headers = map[string]string{"CDCSYNC.position": "x"} }, ErrInvalidHeader, "Headers"},
		{"empty header name", func(e *Event) { e.Headers = map[string]string{"": "x"} }, ErrInvalidHeader, "Headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			tt.edit(&e)
			err := e.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("Validate() = %v, want %v and ErrInvalidEvent", err, tt.want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("Validate() = %#v, want a *ValidationError for field %s", err, tt.field)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		c, ok := canonicalUUID(id)
		if !ok || c != id {
			t.Fatalf("NewID() = %q, not a canonical lower-case UUID", id)
		}
		if id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("NewID() = %q, not version 4 / RFC 4122 variant", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestPrepare(t *testing.T) {
	e := validEvent()
	got, err := e.prepare(3, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := canonicalUUID(got.ID); !ok {
		t.Fatalf("prepare did not generate an id: %q", got.ID)
	}

	e.ID = "0E8B5F3A-1C2D-4E5F-8A9B-0C1D2E3F4A5B"
	if got, _ = e.prepare(0, 100); got.ID != "0e8b5f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b" {
		t.Fatalf("prepare kept id %q, want it in lower case", got.ID)
	}

	e.Payload = []byte(`"` + strings.Repeat("x", 100) + `"`)
	_, err = e.prepare(3, 100)
	var ve *ValidationError
	if !errors.Is(err, ErrPayloadTooLarge) || !errors.As(err, &ve) || ve.Index != 3 {
		t.Fatalf("prepare(oversized) = %v, want ErrPayloadTooLarge for event 3", err)
	}

	e = validEvent()
	e.AggregateID = ""
	if _, err = e.prepare(5, 100); !errors.As(err, &ve) || ve.Index != 5 || !errors.Is(err, ErrMissingAggregateID) {
		t.Fatalf("prepare(no aggregate id) = %v, want ErrMissingAggregateID for event 5", err)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	tests := []Event{
		{
			ID: NewID(), Aggregate: "order", AggregateID: "42", Type: "OrderCreated",
			// Formatting and HTML characters must survive byte for byte.
			Payload: []byte("{ \"note\": \"<a & b>\",\n  \"q\": 2 }"),
			Headers: map[string]string{"trace": "t-1", "tenant": "ünïcode \"quoted\""},
		},
		{ID: NewID(), Aggregate: "item", AggregateID: "a:b", Type: "Raw", ContentType: "application/octet-stream", Payload: []byte{0, 1, 0xff, '"'}},
		{ID: NewID(), Aggregate: "item", AggregateID: "1", Type: "Empty", ContentType: "text/plain", Payload: []byte{}},
		{ID: NewID(), Aggregate: "item", AggregateID: "1", Type: "CE", ContentType: "application/cloudevents+json", Payload: []byte(`[1,2]`)},
	}
	for _, want := range tests {
		got, err := DecodeMessage(EncodeMessage(want))
		if err != nil {
			t.Fatalf("DecodeMessage(EncodeMessage(%s)): %v", want.Type, err)
		}
		if got.ID != want.ID || got.Aggregate != want.Aggregate || got.AggregateID != want.AggregateID ||
			got.Type != want.Type || got.ContentType != want.ContentType || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("round trip of %s:\n got %+v\nwant %+v", want.Type, got, want)
		}
		if len(got.Headers) != len(want.Headers) {
			t.Fatalf("headers: got %v, want %v", got.Headers, want.Headers)
		}
		for k, v := range want.Headers {
			if got.Headers[k] != v {
				t.Fatalf("header %q: got %q, want %q", k, got.Headers[k], v)
			}
		}
	}
}

func TestEncodeMessageIsStable(t *testing.T) {
	e := validEvent()
	e.ID = NewID()
	e.Headers = map[string]string{"b": "2", "a": "1", "c": "3"}
	first := EncodeMessage(e)
	for range 20 {
		if !bytes.Equal(EncodeMessage(e), first) {
			t.Fatal("EncodeMessage output depends on map order")
		}
	}
	want := `{"id":"` + e.ID + `","aggregatetype":"order","aggregateid":"42","type":"OrderCreated","payload":{"item_id":7,"quantity":2},"headers":{"a":"1","b":"2","c":"3"}}`
	if string(first) != want {
		t.Fatalf("EncodeMessage:\n got %s\nwant %s", first, want)
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	good := validEvent()
	good.ID = NewID()
	noAggID := good
	noAggID.AggregateID = ""
	badPayload := good
	badPayload.Payload = []byte(`{"x":`)
	noID := good
	noID.ID = ""
	tests := []struct {
		name    string
		content []byte
		want    error
	}{
		{"not json", []byte("hello"), ErrInvalidEnvelope},
		{"not an object", []byte(`[1]`), ErrInvalidEnvelope},
		{"missing aggregate id", EncodeMessage(noAggID), ErrMissingAggregateID},
		{"payload not json", EncodeMessage(badPayload), ErrInvalidEnvelope}, // the envelope itself breaks
		{"missing id", EncodeMessage(noID), ErrMissingID},
		{"missing payload", []byte(`{"id":"` + good.ID + `","aggregatetype":"order","aggregateid":"1","type":"T"}`), ErrInvalidPayload},
		{"opaque payload not base64", []byte(`{"id":"` + good.ID + `","aggregatetype":"order","aggregateid":"1","type":"T","content_type":"text/plain","payload":"!!"}`), ErrInvalidEnvelope},
		{"opaque payload not a string", []byte(`{"id":"` + good.ID + `","aggregatetype":"order","aggregateid":"1","type":"T","content_type":"text/plain","payload":{}}`), ErrInvalidEnvelope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMessage(tt.content)
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("DecodeMessage = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(WithPrefix("")); err == nil {
		t.Error("New(empty prefix) succeeded")
	}
	if _, err := New(WithDeleteAfterInsert()); err == nil {
		t.Error("New(delete after insert, message mode) succeeded")
	}
	if _, err := New(WithTable("", "outbox")); err == nil {
		t.Error("New(table without schema) succeeded")
	}
	if _, err := New(WithMaxPayloadBytes(0)); err == nil {
		t.Error("New(max payload 0) succeeded")
	}
	p, err := New(WithTable("public", `out"box`), WithDeleteAfterInsert())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.insertSQL, `"public"."out""box"`) {
		t.Errorf("table name not quoted as an identifier: %s", p.insertSQL)
	}
}

func TestPublishValidatesBeforeSending(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	bad := validEvent()
	bad.Payload = []byte("{oops")
	// A nil DB would panic if Publish reached it: the second event is bad,
	// so nothing (not even the first) may be sent.
	err = p.Publish(t.Context(), nil, validEvent(), bad)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Index != 1 || !errors.Is(err, ErrInvalidPayload) {
		t.Fatalf("Publish = %v, want ErrInvalidPayload for event 1", err)
	}
	if !strings.HasPrefix(err.Error(), "outbox event 1 (id ") {
		t.Errorf("Publish error %q does not name the event", err)
	}
	if err := bad.Validate(); !strings.HasPrefix(err.Error(), "outbox event: Payload: payload is not valid JSON: ") {
		t.Errorf("Validate error %q", err)
	}

	tp, err := New(WithTable("public", "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	opaque := validEvent()
	opaque.ContentType = "text/plain"
	opaque.Payload = []byte("hi")
	if err := tp.Publish(t.Context(), nil, opaque); !errors.Is(err, ErrInvalidContentType) {
		t.Fatalf("table-mode Publish(text/plain) = %v, want ErrInvalidContentType", err)
	}
}
