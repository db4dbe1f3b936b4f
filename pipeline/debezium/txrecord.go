package debezium

import (
	"strconv"
)

// TransactionTopic is the topic of BEGIN and END records:
// <prefix>.transaction, as Debezium names it.
func TransactionTopic(prefix string) string { return prefix + ".transaction" }

// TxStatus is a transaction record's status.
type TxStatus string

// Transaction record statuses.
const (
	TxBegin TxStatus = "BEGIN"
	TxEnd   TxStatus = "END"
)

// TxRecord is one BEGIN or END record on the transaction topic.
type TxRecord struct {
	Status TxStatus
	ID     string
	// Collections counts the events per table ("schema.table"), in the
	// order the tables first appeared; END only.
	Collections []TxCollection
	TsMs        int64 // commit time
}

// TxCollection is one table's event count in a transaction.
type TxCollection struct {
	Name  string
	Count int64
}

func txKeySchema() *schema {
	return &schema{typ: "struct", name: nameTxKey, version: 1, fields: []field{{"id", prim("string", false)}}}
}

func txValueSchema() *schema {
	coll := &schema{typ: "struct", optional: true, name: nameTxCollection, version: 1, fields: []field{
		{"data_collection", prim("string", false)}, {"event_count", prim("int64", false)}}}
	return &schema{typ: "struct", name: nameTxValue, version: 1, fields: []field{
		{"status", prim("string", false)},
		{"id", prim("string", false)},
		{"event_count", prim("int64", true)},
		{"data_collections", &schema{typ: "array", optional: true, items: coll}},
		{"ts_ms", prim("int64", false)},
	}}
}

// Key encodes the record's key, {"id":…}, with or without its schema.
func (r *TxRecord) Key(schemas bool) []byte {
	var buf []byte
	if schemas {
		buf = append(txKeySchema().appendJSON([]byte(`{"schema":`), ""), `,"payload":`...)
	}
	buf = append(buf, `{"id":`...)
	buf = appendJacksonString(buf, r.ID)
	buf = append(buf, '}')
	if schemas {
		buf = append(buf, '}')
	}
	return buf
}

// Value encodes the record's value as Debezium's TransactionMetadataValue:
// BEGIN has no counts; END the total and the per-table counts, the tables
// in the order Debezium's HashMap of them iterates.
func (r *TxRecord) Value(schemas bool) []byte {
	var buf []byte
	if schemas {
		buf = append(txValueSchema().appendJSON([]byte(`{"schema":`), ""), `,"payload":`...)
	}
	buf = append(buf, `{"status":`...)
	buf = appendJacksonString(buf, string(r.Status))
	buf = append(buf, `,"id":`...)
	buf = appendJacksonString(buf, r.ID)
	if r.Status == TxBegin {
		buf = append(buf, `,"event_count":null,"data_collections":null`...)
	} else {
		var total int64
		names := make([]string, len(r.Collections))
		for i, c := range r.Collections {
			total += c.Count
			names[i] = c.Name
		}
		buf = append(buf, `,"event_count":`...)
		buf = strconv.AppendInt(buf, total, 10)
		buf = append(buf, `,"data_collections":[`...)
		for n, i := range javaHashMapOrder(names) {
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, `{"data_collection":`...)
			buf = appendJacksonString(buf, r.Collections[i].Name)
			buf = append(buf, `,"event_count":`...)
			buf = strconv.AppendInt(buf, r.Collections[i].Count, 10)
			buf = append(buf, '}')
		}
		buf = append(buf, ']')
	}
	buf = append(buf, `,"ts_ms":`...)
	buf = strconv.AppendInt(buf, r.TsMs, 10)
	buf = append(buf, '}')
	if schemas {
		buf = append(buf, '}')
	}
	return buf
}
