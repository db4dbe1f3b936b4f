package soak

import (
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestDevBrokerKeepsAcknowledgedDataOnSIGKILL is why the soak may kill the
// development broker with SIGKILL rather than only stop it: kfake writes
// each produced batch and each offset commit to its data dir before it
// answers (into the page cache; without kfake.SyncWrites an OS crash could
// still lose them, a process crash cannot). Records acknowledged with
// acks=all and committed group offsets survive a SIGKILL.
func TestDevBrokerKeepsAcknowledgedDataOnSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the development broker (skipped with -short)")
	}
	bin := testenv.BuildCdcsync(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr, dir := "127.0.0.1:"+strconv.Itoa(port), t.TempDir()
	const topic, group, n = "kept", "kept-group", 500
	start := func() *testenv.Process {
		p := testenv.StartProcess(t, "dev-broker", bin, []string{
			"CDCSYNC_DEV_BROKER_ADDR=" + addr, "CDCSYNC_DEV_BROKER_DATA_DIR=" + dir,
			"CDCSYNC_DEV_BROKER_TOPICS=" + topic + ":2",
		}, "dev-broker")
		if err := waitTopics(addr, 30*time.Second, topic); err != nil {
			t.Fatalf("%v\n%s", err, p.Tail(2000))
		}
		return p
	}
	broker := start()

	cfg := testenv.SaramaConfig()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	client, err := sarama.NewClient([]string{addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		_, _, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic: topic, Partition: int32(i % 2), Value: sarama.StringEncoder(strconv.Itoa(i)),
		})
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	// A commit outside group membership (generation -1), as tools do.
	coord, err := client.Coordinator(group)
	if err != nil {
		t.Fatal(err)
	}
	req := &sarama.OffsetCommitRequest{Version: 2, ConsumerGroup: group, ConsumerGroupGeneration: -1}
	req.AddBlock(topic, 1, n/4, 0, "")
	resp, err := coord.CommitOffset(req)
	if err != nil {
		t.Fatal(err)
	}
	if kerr := resp.Errors[topic][1]; kerr != sarama.ErrNoError {
		t.Fatalf("commit offset: %v", kerr)
	}
	_ = producer.Close()

	if err := broker.Kill(); err != nil {
		t.Fatal(err)
	}
	start()

	got := map[string]bool{}
	recs := 0
	reader, err := sarama.NewClient([]string{addr}, testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	consumer, err := sarama.NewConsumerFromClient(reader)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	for p := range int32(2) {
		end, err := reader.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		if end != n/2 {
			t.Errorf("partition %d ends at %d after SIGKILL, want %d", p, end, n/2)
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < end; off++ {
			select {
			case m := <-pc.Messages():
				got[string(m.Value)] = true
				recs++
			case <-time.After(10 * time.Second):
				t.Fatalf("partition %d: no record at offset %d of %d", p, off, end)
			}
		}
		pc.Close()
	}
	if recs != n || len(got) != n {
		t.Errorf("read %d records (%d distinct) after SIGKILL, want %d", recs, len(got), n)
	}
	admin, err := sarama.NewClusterAdminFromClient(reader)
	if err != nil {
		t.Fatal(err)
	}
	offsets, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {1}})
	if err != nil {
		t.Fatal(err)
	}
	if b := offsets.GetBlock(topic, 1); b == nil || b.Offset != n/4 {
		t.Errorf("committed offset after SIGKILL: %+v, want %d", b, n/4)
	}
}
