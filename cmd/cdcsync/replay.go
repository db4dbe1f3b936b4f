package main

// replayCommand: `replay snapshot` re-reads tables into Kafka while capture
// runs; `replay topic` re-applies a topic range to a sink.
func replayCommand() command {
	return pending("replay", "backfill: 'replay snapshot' re-reads tables into Kafka; 'replay topic' re-applies a topic range to a sink")
}
