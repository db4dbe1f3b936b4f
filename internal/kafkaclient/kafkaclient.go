// Package kafkaclient turns config.Kafka into a sarama client configuration
// shared by capture, the sinks and the operator commands: protocol version,
// client id, TLS (CA, client certificate) and SASL (PLAIN, SCRAM-SHA-256,
// SCRAM-SHA-512).
package kafkaclient

import (
	"fmt"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
)

// Config returns a sarama configuration for the brokers in k: protocol
// version, client id, TLS and SASL, and read_committed for consumers. Callers set producer or consumer
// options on it. Files named in k are read now, so a missing or malformed
// certificate is reported here rather than at the first connection.
func Config(k config.Kafka) (*sarama.Config, error) {
	cfg := sarama.NewConfig()
	v, err := sarama.ParseKafkaVersion(k.Version)
	if err != nil {
		return nil, fmt.Errorf("CDCSYNC_KAFKA_VERSION %q: %w", k.Version, err)
	}
	cfg.Version = v
	cfg.ClientID = k.ClientID
	// Every reader (sinks, replay, trace, status) reads read_committed:
	// records of open or aborted Kafka transactions are never applied or
	// counted; ends of partitions come from StableOffset.
	// (Kafka before 0.11 has no transactions, and sarama refuses it.)
	if v.IsAtLeast(sarama.V0_11_0_0) {
		cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	if k.TLS {
		tc, err := tlsConfig(k)
		if err != nil {
			return nil, err
		}
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = tc
	}
	if err := setSASL(cfg, k); err != nil {
		return nil, err
	}
	return cfg, nil
}
