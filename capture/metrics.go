package capture

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are capture's Prometheus series (see the README for meanings).
type metrics struct {
	captured      *prometheus.CounterVec // changes decoded, per table
	produced      *prometheus.CounterVec // messages handed to the producer, per topic
	acknowledged  *prometheus.CounterVec // messages acknowledged by Kafka, per topic
	produceErrors prometheus.Counter
	confirmedLSN  prometheus.Gauge
	receivedLSN   prometheus.Gauge
	inFlight      prometheus.Gauge
	inFlightBytes prometheus.Gauge
	reconnects    prometheus.Counter
	snapshotRows  *prometheus.CounterVec
	slotLagBytes  prometheus.Gauge
	produceTime   prometheus.Histogram
	// heartbeatFailures counts heartbeats that could not be written: an
	// idle slot does not advance while they fail.
	heartbeatFailures prometheus.Counter
	// poisonRecords counts changes Kafka cannot take, per topic and what
	// capture did (stopped, dead_lettered); stoppedOnPoison is 1 while
	// capture is stopped at one.
	poisonRecords   *prometheus.CounterVec
	stoppedOnPoison prometheus.Gauge
	// slotLost is 1 per reason once capture found its slot lost or the
	// source changed (and stopped).
	slotLost *prometheus.GaugeVec
	// slotRecreated counts the lost slots capture started over from
	// (CDCSYNC_SNAPSHOT=when_needed), per reason.
	slotRecreated *prometheus.CounterVec
	// recovering is 1 while the re-snapshot after a lost slot is not yet
	// complete on Kafka (recovery.go).
	recovering prometheus.Gauge
	// Backfills (the initial snapshot's too), per table.
	backfillRowsDone     *prometheus.GaugeVec
	backfillRowsExpected *prometheus.GaugeVec
	backfillETA          *prometheus.GaugeVec
	// Exactly-once delivery: Kafka transactions by result, and the LSN of
	// the last committed checkpoint.
	kafkaTxns     *prometheus.CounterVec
	checkpointLSN prometheus.Gauge
	// droppedOnResume counts units (Postgres transactions, messages) the
	// slot sent again that the checkpoint says are on Kafka already.
	droppedOnResume prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		captured: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcsync_capture_events_captured_total", Help: "Row changes decoded from the replication stream, per table.",
		}, []string{"table"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcsync_capture_events_produced_total", Help: "Messages handed to the Kafka producer, per topic.",
		}, []string{"topic"}),
		acknowledged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcsync_capture_events_acknowledged_total", Help: "Messages acknowledged by Kafka (acks=all), per topic.",
		}, []string{"topic"}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcsync_capture_produce_errors_total", Help: "Messages Kafka failed to accept after retries; each restarts the stream.",
		}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_confirmed_lsn", Help: "LSN last confirmed to Postgres (everything before it is on Kafka).",
		}),
		receivedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_received_lsn", Help: "Highest WAL position received from Postgres.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_in_flight_messages", Help: "Messages produced but not yet acknowledged.",
		}),
		inFlightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_in_flight_bytes", Help: "Bytes of the messages produced but not yet acknowledged.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcsync_capture_session_restarts_total", Help: "Replication sessions restarted after an error.",
		}),
		snapshotRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcsync_capture_snapshot_rows_total", Help: "Rows emitted by snapshots, per table.",
		}, []string{"table"}),
		slotLagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_slot_lag_bytes", Help: "Bytes of WAL between the server's WAL end (as of the last keepalive) and the confirmed LSN.",
		}),
		produceTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cdcsync_capture_produce_seconds", Help: "Time from handing a message to the producer until Kafka acknowledged it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		slotLost: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcsync_capture_slot_lost", Help: "1 when capture found its replication slot missing or invalidated, or the source changed, and refused to continue; label reason: slot_missing, slot_invalidated, source_changed.",
		}, []string{"reason"}),
		slotRecreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcsync_capture_slot_recreated_total", Help: "Times capture found its replication slot missing or invalidated, or the source changed, and with CDCSYNC_SNAPSHOT=when_needed created the slot again and read every table again; label reason: slot_missing, slot_invalidated, source_changed.",
		}, []string{"reason"}),
		recovering: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_recovering", Help: "1 while capture re-reads every table after a lost slot (CDCSYNC_SNAPSHOT=when_needed) and the resnapshot-done records are not on Kafka yet: the topics are not exact until then.",
		}),
		heartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcsync_capture_heartbeat_failures_total", Help: "Heartbeats that could not be written (connection or query failed); an idle slot does not advance while they fail.",
		}),
		poisonRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcsync_capture_poison_records_total", Help: "Changes too large for Kafka (poison records), per topic and action: stopped (CDCSYNC_ON_POISON=stop, counted per attempt) or dead_lettered.",
		}, []string{"topic", "action"}),
		stoppedOnPoison: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_stopped_on_poison", Help: "1 while capture is stopped at a poison record (CDCSYNC_ON_POISON=stop), else 0.",
		}),
		backfillRowsDone: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcsync_capture_backfill_rows_done", Help: "Rows of the running or last backfill (initial snapshot or replay snapshot) read and on Kafka, per table.",
		}, []string{"table"}),
		backfillRowsExpected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcsync_capture_backfill_rows_expected", Help: "Rows the running or last backfill expects to read (an estimate until it is done), per table.",
		}, []string{"table"}),
		backfillETA: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcsync_capture_backfill_eta_seconds", Help: "Estimated time left of the running backfill at its current rate (0 when done or unknown), per table.",
		}, []string{"table"}),
		kafkaTxns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcsync_capture_kafka_transactions_total", Help: "Kafka transactions of exactly-once delivery, by result: committed, aborted (a stop inside a Postgres transaction) or failed (the commit failed; the session restarts and the next producer aborts it).",
		}, []string{"result"}),
		checkpointLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcsync_capture_checkpoint_lsn", Help: "Exactly-once delivery: LSN of the last checkpoint committed to Kafka (everything up to it is visible to read_committed consumers).",
		}),
		droppedOnResume: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcsync_capture_resume_dropped_total", Help: "Exactly-once delivery: Postgres transactions and logical messages the slot sent again after a restart that were dropped because the Kafka checkpoint has them.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.captured, m.produced, m.acknowledged, m.produceErrors,
		m.confirmedLSN, m.receivedLSN, m.inFlight, m.inFlightBytes, m.reconnects, m.snapshotRows, m.slotLagBytes, m.produceTime, m.heartbeatFailures,
		m.poisonRecords, m.stoppedOnPoison, m.slotLost, m.slotRecreated, m.recovering,
		m.backfillRowsDone, m.backfillRowsExpected, m.backfillETA, m.kafkaTxns, m.checkpointLSN, m.droppedOnResume} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return nil, err
			}
		}
	}
	return m, nil
}
