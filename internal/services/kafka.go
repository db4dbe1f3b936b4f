package services

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an in-process kfake broker (a development Kafka-protocol broker)
// on a free port, keeping its data in a directory so that it can be stopped
// and started again like a real broker without losing records.
type Kafka struct {
	Port    int
	DataDir string
	mu      sync.Mutex
	cluster *kfake.Cluster
}

// StartKafka starts a single-broker kfake cluster.
func StartKafka() (*Kafka, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cdcsync-kafka-")
	if err != nil {
		return nil, fmt.Errorf("create kafka dir: %w", err)
	}
	k := &Kafka{Port: port, DataDir: dir}
	if err := k.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return k, nil
}

// Start (re)starts the broker on its port with its data dir.
func (k *Kafka) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cluster != nil {
		return errors.New("kafka already running")
	}
	c, err := kfake.NewCluster(kfake.Ports(k.Port), kfake.NumBrokers(1), kfake.DataDir(k.DataDir),
		kfake.DefaultNumPartitions(4))
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	k.cluster = c
	return nil
}

// Stop shuts the broker down cleanly; records persist in DataDir.
func (k *Kafka) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cluster != nil {
		k.cluster.Close()
		k.cluster = nil
	}
}

// Cluster returns the running kfake cluster (for fault injection with
// ControlKey), or nil when stopped.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster
}

// Brokers is the bootstrap address list.
func (k *Kafka) Brokers() []string { return []string{"127.0.0.1:" + strconv.Itoa(k.Port)} }

// Close stops the broker and removes its data.
func (k *Kafka) Close() {
	k.Stop()
	_ = os.RemoveAll(k.DataDir)
}

// CreateTopic creates a topic with the given partitions (replication 1).
// Topics are created explicitly because kfake persists only those.
func (k *Kafka) CreateTopic(name string, partitions int32) error {
	admin, err := sarama.NewClusterAdmin(k.Brokers(), adminConfig())
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	defer admin.Close()
	err = admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	return nil
}

// adminConfig is the client configuration CreateTopic uses.
func adminConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.ClientID = "cdcsync-services"
	return cfg
}
