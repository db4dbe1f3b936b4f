package capture

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/pipeline"
)

// Errors of Decode, for errors.Is.
var (
	// ErrUnknownRelation: a row change names a relation id no Relation
	// message has defined on this stream.
	ErrUnknownRelation = errors.New("unknown relation")
	// ErrBinaryColumn: a tuple carries a value in binary format, which
	// capture never asks for.
	ErrBinaryColumn = errors.New("binary tuple data")
	// ErrNoTransaction: a row change arrived outside Begin/Commit.
	ErrNoTransaction = errors.New("change outside a transaction")
)

// SourceInfo is what the decoder needs to know about the source besides the
// stream itself.
type SourceInfo struct {
	Name string // Debezium source.name (the topic prefix)
	DB   string // database name
	// PrimaryKeys maps "schema.table" to the primary-key columns in key
	// order, read from the catalog. Tables missing here are keyed by the
	// columns the Relation message flags as replica identity.
	PrimaryKeys map[string][]string
	// Epoch is the source epoch every position carries (see
	// pipeline.Position and stateStore.sourceEpoch).
	Epoch uint32
}

// Decoder turns pgoutput messages (protocol version 1) into Changes. It keeps
// the transaction and relation state of one replication stream, so it is
// used by one goroutine and sees every message of the stream in order.
type Decoder struct {
	src   SourceInfo
	types *Types
	rels  map[uint32]*relation
	last  *relation // the relation of the previous change: most rows hit it
	tx    txState
	now   func() time.Time
	moved MovedRowFetcher // nil: key moves keep unchanged TOAST columns as unchanged
	// lastCommit is the commit LSN of the previous transaction on the
	// stream (Debezium's source.sequence starts with it); 0 until one ends.
	lastCommit pglogrepl.LSN

	// Per-call scratch, reused across calls: values are encoded here and
	// copied into one exact-size buffer per call, which is what the
	// returned Changes point into.
	scratch []byte
	spans   []span
}

type txState struct {
	active    bool
	xid       uint32
	commitLSN pglogrepl.LSN
	commitMs  int64
	commitUs  int64
}

// relation is a table as the last Relation message for its id described it.
type relation struct {
	id            uint32
	schema, table string
	cols          []relColumn
	key           []int // indexes into cols of the key columns, in key order
	// identity marks the columns a key-only old tuple ('K') carries; the
	// others arrive as nulls that say nothing about the row.
	identity []bool
	gen      uint64 // Types generation the column encodings are from
}

type relColumn struct {
	name string
	oid  uint32
	info *typeInfo
}

// span locates one encoded column value in the scratch buffer.
type span struct {
	start, end int
	state      byte // pglogrepl.TupleDataType*: 't' value, 'n' null, 'u' unchanged TOAST
}

// NewDecoder returns a decoder for one replication stream.
func NewDecoder(src SourceInfo, types *Types) *Decoder {
	return &Decoder{src: src, types: types, rels: map[uint32]*relation{}, now: time.Now}
}

// Decode handles one pgoutput message received in an XLogData whose
// WALStart is walStart and returns the changes to produce, in order. An
// insert or update yields one change; a delete yields the delete and then a
// tombstone for its key; an update that changes the primary key yields a
// delete and tombstone for the old key and then a create for the new one;
// a truncate yields one change per truncated table. Begin, Commit, Relation,
// Type, Origin and logical decoding messages yield none.
//
// The returned Changes own their memory; the decoder does not touch them
// again.
func (d *Decoder) Decode(msg pglogrepl.Message, walStart pglogrepl.LSN) ([]Change, error) {
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		d.tx = txState{active: true, xid: m.Xid, commitLSN: m.FinalLSN,
			commitMs: m.CommitTime.UnixMilli(), commitUs: m.CommitTime.UnixMicro()}
		return nil, nil
	case *pglogrepl.CommitMessage:
		if d.tx.active {
			d.lastCommit = d.tx.commitLSN
		}
		d.tx = txState{}
		return nil, nil
	case *pglogrepl.RelationMessage:
		d.defineRelation(m)
		return nil, nil
	case *pglogrepl.TypeMessage:
		d.types.AddType(m.DataType, m.Namespace, m.Name)
		return nil, nil
	case *pglogrepl.OriginMessage, *pglogrepl.LogicalDecodingMessage:
		return nil, nil
	case *pglogrepl.InsertMessage:
		return d.insert(m, walStart)
	case *pglogrepl.UpdateMessage:
		return d.update(m, walStart)
	case *pglogrepl.DeleteMessage:
		return d.delete(m, walStart)
	case *pglogrepl.TruncateMessage:
		return d.truncate(m, walStart)
	case nil:
		return nil, errors.New("decode: nil message")
	default:
		return nil, fmt.Errorf("decode: unsupported pgoutput message %s", msg.Type())
	}
}

// SetMovedRowFetcher makes the decoder complete the create of an update
// that moves a row to a new key: TOASTed columns the stream left out as
// unchanged are read from the source with f, since no row exists under the
// new key for consumers to keep them from. The values are the row's
// current ones, which may be newer than the change; any newer value has
// its own later event on the key, so every consumer ends with the row.
func (d *Decoder) SetMovedRowFetcher(f MovedRowFetcher) { d.moved = f }

// defineRelation (re)defines a relation. pgoutput sends a Relation message
// before the first change of a relation on a stream and again after its
// schema changed, so a new definition applies to every following tuple.
func (d *Decoder) defineRelation(m *pglogrepl.RelationMessage) {
	rel := &relation{id: m.RelationID, schema: m.Namespace, table: m.RelationName,
		cols: make([]relColumn, len(m.Columns)), identity: make([]bool, len(m.Columns))}
	for i, c := range m.Columns {
		rel.cols[i] = relColumn{name: c.Name, oid: c.DataType}
		rel.identity[i] = c.Flags&1 != 0
	}
	rel.resolveTypes(d.types)
	if pk := d.src.PrimaryKeys[m.Namespace+"."+m.RelationName]; len(pk) > 0 {
		rel.key = make([]int, 0, len(pk))
		for _, name := range pk {
			for i, c := range rel.cols {
				if c.name == name {
					rel.key = append(rel.key, i)
					break
				}
			}
		}
		if len(rel.key) != len(pk) || !rel.carriesKey(m.ReplicaIdentity) {
			rel.key = nil // the catalog and the stream disagree: trust the stream
		}
	}
	if rel.key == nil {
		for i, c := range m.Columns {
			if c.Flags&1 != 0 {
				rel.key = append(rel.key, i)
			}
		}
	}
	d.rels[m.RelationID] = rel
	if d.last != nil && d.last.id == m.RelationID {
		d.last = rel
	}
}

// carriesKey reports whether the old tuple of a delete carries every key
// column: always with REPLICA IDENTITY FULL ('f'), otherwise when each key
// column is flagged as part of the identity. NOTHING ('n') flags nothing:
// inserts and updates keep the catalog key and deletes fail (see delete). The replica identity can change
// while capture runs (ALTER TABLE ... REPLICA IDENTITY sends a new Relation
// message); keying by columns deletes do not carry would key them null.
func (r *relation) carriesKey(replIdent uint8) bool {
	if replIdent == 'f' || replIdent == 'n' {
		return true
	}
	for _, k := range r.key {
		if !r.identity[k] {
			return false
		}
	}
	return true
}

func (r *relation) resolveTypes(types *Types) {
	r.gen = types.generation()
	for i := range r.cols {
		r.cols[i].info = types.lookup(r.cols[i].oid)
	}
}

// relation returns the definition of id for a change inside a transaction.
func (d *Decoder) relation(op string, id uint32) (*relation, error) {
	if !d.tx.active {
		return nil, fmt.Errorf("decode %s on relation %d: %w", op, id, ErrNoTransaction)
	}
	rel := d.last
	if rel == nil || rel.id != id {
		var ok bool
		if rel, ok = d.rels[id]; !ok {
			return nil, fmt.Errorf("decode %s: relation id %d: %w", op, id, ErrUnknownRelation)
		}
		d.last = rel
	}
	if g := d.types.generation(); g != rel.gen {
		rel.resolveTypes(d.types) // types learnt since the Relation message
	}
	return rel, nil
}

func (d *Decoder) insert(m *pglogrepl.InsertMessage, walStart pglogrepl.LSN) ([]Change, error) {
	rel, err := d.relation("insert", m.RelationID)
	if err != nil {
		return nil, err
	}
	d.reset()
	if err := d.encodeTuple(rel, m.Tuple, nil); err != nil {
		return nil, fmt.Errorf("decode insert into %s.%s at %s: %w", rel.schema, rel.table, walStart, err)
	}
	return d.build(rel, walStart, buildSpec{op: pipeline.OpCreate, after: 0, before: -1, key: 0})
}

func (d *Decoder) update(m *pglogrepl.UpdateMessage, walStart pglogrepl.LSN) ([]Change, error) {
	rel, err := d.relation("update", m.RelationID)
	if err != nil {
		return nil, err
	}
	d.reset()
	n := len(rel.cols)
	// The old tuple, when sent, holds the values of unchanged TOAST columns
	// (REPLICA IDENTITY FULL, or key columns stored out of line).
	if err := d.encodeTuple(rel, m.NewTuple, m.OldTuple); err != nil {
		return nil, fmt.Errorf("decode update of %s.%s at %s: new tuple: %w", rel.schema, rel.table, walStart, err)
	}
	if m.OldTuple == nil {
		return d.build(rel, walStart, buildSpec{op: pipeline.OpUpdate, after: 0, before: -1, key: 0})
	}
	if err := d.encodeTuple(rel, m.OldTuple, nil); err != nil {
		return nil, fmt.Errorf("decode update of %s.%s at %s: old tuple: %w", rel.schema, rel.table, walStart, err)
	}
	if d.keyChanged(rel, 0, n) {
		// Debezium's form of a key change: the old key is deleted (and
		// tombstoned) and the row is created under the new key, so that
		// per-key consumers and compacted topics stay right.
		if err := d.fillMoved(rel, m.NewTuple); err != nil {
			return nil, fmt.Errorf("decode update of %s.%s at %s: %w", rel.schema, rel.table, walStart, err)
		}
		return d.build(rel, walStart,
			buildSpec{op: pipeline.OpDelete, after: -1, before: n, key: n, tombstone: true,
				keyOnly: m.OldTupleType == pglogrepl.UpdateMessageTupleTypeKey},
			buildSpec{op: pipeline.OpCreate, after: 0, before: -1, key: 0})
	}
	before := -1
	if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld {
		before = n // the whole old row; a 'K' tuple only has the key
	}
	return d.build(rel, walStart, buildSpec{op: pipeline.OpUpdate, after: 0, before: before, key: 0})
}

func (d *Decoder) delete(m *pglogrepl.DeleteMessage, walStart pglogrepl.LSN) ([]Change, error) {
	rel, err := d.relation("delete", m.RelationID)
	if err != nil {
		return nil, err
	}
	if m.OldTuple == nil {
		return nil, fmt.Errorf("decode delete from %s.%s at %s: %w: no old tuple; run ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key) or FULL",
			rel.schema, rel.table, walStart, ErrReplicaIdentity, pgx.Identifier{rel.schema, rel.table}.Sanitize())
	}
	d.reset()
	if err := d.encodeTuple(rel, m.OldTuple, nil); err != nil {
		return nil, fmt.Errorf("decode delete from %s.%s at %s: %w", rel.schema, rel.table, walStart, err)
	}
	return d.build(rel, walStart, buildSpec{op: pipeline.OpDelete, after: -1, before: 0, key: 0, tombstone: true,
		keyOnly: m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey})
}

func (d *Decoder) truncate(m *pglogrepl.TruncateMessage, walStart pglogrepl.LSN) ([]Change, error) {
	changes := make([]Change, 0, len(m.RelationIDs))
	events := make([]pipeline.Event, len(m.RelationIDs))
	now := d.now()
	for i, id := range m.RelationIDs {
		rel, err := d.relation("truncate", id)
		if err != nil {
			return nil, err
		}
		ev := &events[i]
		ev.Op, ev.TsMs, ev.TsNs = pipeline.OpTruncate, now.UnixMilli(), now.UnixNano()
		d.fillSource(&ev.Source, rel, walStart)
		changes = append(changes, Change{Schema: rel.schema, Table: rel.table, Event: ev, Position: d.position(walStart)})
	}
	return changes, nil
}

func (d *Decoder) reset() {
	d.scratch = d.scratch[:0]
	d.spans = d.spans[:0]
}

// encodeTuple appends one span per column of tup to d.spans, encoding
// values into d.scratch. An unchanged TOAST column takes its value from
// fill (the old tuple) when fill has it.
func (d *Decoder) encodeTuple(rel *relation, tup, fill *pglogrepl.TupleData) error {
	if tup == nil {
		return errors.New("missing tuple")
	}
	if len(tup.Columns) != len(rel.cols) {
		return fmt.Errorf("tuple has %d columns, relation %d", len(tup.Columns), len(rel.cols))
	}
	for i, c := range tup.Columns {
		if c.DataType == pglogrepl.TupleDataTypeToast && fill != nil && len(fill.Columns) == len(rel.cols) &&
			fill.Columns[i].DataType == pglogrepl.TupleDataTypeText {
			c = fill.Columns[i]
		}
		sp := span{start: len(d.scratch), state: c.DataType}
		switch c.DataType {
		case pglogrepl.TupleDataTypeText:
			var err error
			if d.scratch, err = appendValue(d.scratch, rel.cols[i].info, c.Data); err != nil {
				return d.columnErr(rel, i, err)
			}
		case pglogrepl.TupleDataTypeNull:
			d.scratch = append(d.scratch, "null"...)
		case pglogrepl.TupleDataTypeToast:
		case pglogrepl.TupleDataTypeBinary:
			return fmt.Errorf("column %q: %w", rel.cols[i].name, ErrBinaryColumn)
		default:
			return fmt.Errorf("column %q: unknown tuple data type %q", rel.cols[i].name, c.DataType)
		}
		sp.end = len(d.scratch)
		d.spans = append(d.spans, sp)
	}
	return nil
}

// fillMoved replaces the unchanged TOAST columns of the new tuple (spans
// from 0) by the values the source holds under the new key now. When no
// row exists there any more, a later change of the stream deletes or moves
// the key, and the columns stay unchanged.
func (d *Decoder) fillMoved(rel *relation, tup *pglogrepl.TupleData) error {
	var missing []int
	var names []string
	for i := range rel.cols {
		if d.spans[i].state == pglogrepl.TupleDataTypeToast {
			missing = append(missing, i)
			names = append(names, rel.cols[i].name)
		}
	}
	if len(missing) == 0 || d.moved == nil {
		return nil
	}
	keyCols := make([]string, len(rel.key))
	keyOIDs := make([]uint32, len(rel.key))
	keyVals := make([][]byte, len(rel.key))
	for j, k := range rel.key {
		if tup.Columns[k].DataType != pglogrepl.TupleDataTypeText {
			return nil // a key that is NULL or itself unchanged TOAST: nothing to look it up by
		}
		keyCols[j], keyOIDs[j], keyVals[j] = rel.cols[k].name, rel.cols[k].oid, tup.Columns[k].Data
	}
	vals, found, err := d.moved(rel.schema, rel.table, keyCols, keyOIDs, keyVals, names)
	if err != nil || !found {
		return err
	}
	for j, i := range missing {
		sp := span{start: len(d.scratch), state: pglogrepl.TupleDataTypeText}
		if vals[j] == nil {
			sp.state = pglogrepl.TupleDataTypeNull
			d.scratch = append(d.scratch, "null"...)
		} else if d.scratch, err = appendValue(d.scratch, rel.cols[i].info, vals[j]); err != nil {
			return d.columnErr(rel, i, err)
		}
		sp.end = len(d.scratch)
		d.spans[i] = sp
	}
	return nil
}

// columnErr says which value of rel failed: column, type and position, never
// the value itself, which may be personal data and ends up in logs.
func (d *Decoder) columnErr(rel *relation, i int, err error) error {
	return fmt.Errorf("column %q (type %s, position %d): %w", rel.cols[i].name, d.types.TypeName(rel.cols[i].oid), i+1, err)
}

// keyChanged compares the key columns of the new tuple (spans from newAt)
// with those of the old tuple (spans from oldAt). A key the old tuple does
// not carry (its replica identity is another index) counts as unchanged.
func (d *Decoder) keyChanged(rel *relation, newAt, oldAt int) bool {
	if len(rel.key) == 0 {
		return false
	}
	changed := false
	for _, k := range rel.key {
		o, n := d.spans[oldAt+k], d.spans[newAt+k]
		if o.state != pglogrepl.TupleDataTypeText || n.state != pglogrepl.TupleDataTypeText {
			return false
		}
		if !bytes.Equal(d.scratch[o.start:o.end], d.scratch[n.start:n.end]) {
			changed = true
		}
	}
	return changed
}

// buildSpec says how to make one event from the encoded spans: after,
// before and key are the index of the first span of the tuple to use (-1:
// none); tombstone adds a tombstone for the key after the event.
type buildSpec struct {
	op                 pipeline.Op
	after, before, key int
	tombstone          bool
	// keyOnly: the before tuple is a key-only old tuple, whose columns
	// outside the replica identity are left out of before.
	keyOnly bool
}

// build turns the encoded spans into Changes. All values of the call are
// copied into one exact-size buffer, and all columns into one slice, so a
// row costs a handful of allocations whatever its width.
func (d *Decoder) build(rel *relation, walStart pglogrepl.LSN, specs ...buildSpec) ([]Change, error) {
	n := len(rel.cols)
	vals := make([]byte, len(d.scratch))
	copy(vals, d.scratch)

	nchanges, ncols := 0, 0
	for _, s := range specs {
		nchanges++
		if s.tombstone {
			nchanges++
		}
		if s.after >= 0 {
			ncols += n
		}
		if s.before >= 0 {
			ncols += n
		}
		ncols += len(rel.key)
	}
	changes := make([]Change, 0, nchanges)
	events := make([]pipeline.Event, len(specs))
	cols := make([]pipeline.Column, 0, ncols)
	pos := d.position(walStart)
	now := d.now()

	for i, s := range specs {
		ev := &events[i]
		ev.Op, ev.TsMs, ev.TsNs = s.op, now.UnixMilli(), now.UnixNano()
		d.fillSource(&ev.Source, rel, walStart)
		if s.before >= 0 {
			ev.Before, _, cols = d.row(rel, vals, s.before, s.keyOnly, cols)
		}
		if s.after >= 0 {
			ev.After, ev.Unchanged, cols = d.row(rel, vals, s.after, false, cols)
		}
		var key pipeline.Row
		if len(rel.key) > 0 {
			start := len(cols)
			for _, k := range rel.key {
				sp := d.spans[s.key+k]
				if sp.state == pglogrepl.TupleDataTypeToast {
					return nil, fmt.Errorf("decode %s.%s: key column %q is an unchanged TOAST value the stream did not send",
						rel.schema, rel.table, rel.cols[k].name)
				}
				cols = append(cols, pipeline.Column{Name: rel.cols[k].name, Value: vals[sp.start:sp.end:sp.end]})
			}
			key = cols[start:len(cols):len(cols)]
		}
		changes = append(changes, Change{Schema: rel.schema, Table: rel.table, Key: key, Event: ev, Position: pos})
		if s.tombstone {
			changes = append(changes, Change{Schema: rel.schema, Table: rel.table, Key: key, Position: pos})
		}
	}
	return changes, nil
}

// row makes the Row of the tuple whose spans start at at, appending its
// columns to cols. Unchanged TOAST columns are left out and named in
// unchanged. keyOnly leaves out the columns outside the replica identity.
func (d *Decoder) row(rel *relation, vals []byte, at int, keyOnly bool, cols []pipeline.Column) (pipeline.Row, []string, []pipeline.Column) {
	start := len(cols)
	var unchanged []string
	for i, c := range rel.cols {
		if keyOnly && !rel.identity[i] {
			continue
		}
		sp := d.spans[at+i]
		if sp.state == pglogrepl.TupleDataTypeToast {
			unchanged = append(unchanged, c.name)
			continue
		}
		cols = append(cols, pipeline.Column{Name: c.name, Value: vals[sp.start:sp.end:sp.end]})
	}
	return cols[start:len(cols):len(cols)], unchanged, cols
}

func (d *Decoder) position(walStart pglogrepl.LSN) pipeline.Position {
	return pipeline.Position{Epoch: d.src.Epoch, Commit: d.tx.commitLSN, Change: walStart}
}

func (d *Decoder) fillSource(s *pipeline.Source, rel *relation, walStart pglogrepl.LSN) {
	*s = pipeline.Source{
		Connector: "postgresql",
		Name:      d.src.Name,
		DB:        d.src.DB,
		Schema:    rel.schema,
		Table:     rel.table,
		TxID:      d.tx.xid,
		LSN:       uint64(walStart),
		CommitLSN: uint64(d.tx.commitLSN),
		TsMs:      d.tx.commitMs,
		Snapshot:  "false",
		TsUs:      d.tx.commitUs,

		LastCommitLSN: uint64(d.lastCommit),
	}
}
