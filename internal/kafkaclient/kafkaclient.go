// Package kafkaclient turns config.Kafka into a sarama client configuration
// shared by capture, the sinks and the operator commands.
package kafkaclient

import (
	"fmt"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
)

// Config returns a sarama configuration for the brokers in k: protocol
// version and client id. Callers set producer or consumer options on it.
func Config(k config.Kafka) (*sarama.Config, error) {
	cfg := sarama.NewConfig()
	v, err := sarama.ParseKafkaVersion(k.Version)
	if err != nil {
		return nil, fmt.Errorf("CDCSYNC_KAFKA_VERSION %q: %w", k.Version, err)
	}
	cfg.Version = v
	cfg.ClientID = k.ClientID
	return cfg, nil
}
