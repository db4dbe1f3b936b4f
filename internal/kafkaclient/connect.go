package kafkaclient

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
)

// ErrAuthentication is returned (wrapped) by NewClient when the brokers
// are reachable but refuse the SASL credentials.
var ErrAuthentication = errors.New("kafka SASL authentication failed")

// NewClient connects to the brokers in k with sc (from Config) and returns
// a client to build producers, consumers and admins from
// (sarama.NewSyncProducerFromClient, NewConsumerGroupFromClient, ...).
//
// sarama reports every failed bootstrap as "client has run out of
// available brokers", and some brokers answer bad credentials by closing
// the connection (EOF). On failure NewClient probes a broker once without
// SASL to tell an authentication problem (ErrAuthentication) from an
// unreachable broker or a TLS problem.
func NewClient(k config.Kafka, sc *sarama.Config) (sarama.Client, error) {
	client, err := sarama.NewClient(k.Brokers, sc)
	if err == nil {
		return client, nil
	}
	if !sc.Net.SASL.Enable {
		return nil, fmt.Errorf("connect to kafka brokers %v: %w", k.Brokers, err)
	}
	plain := *sc
	plain.Net.SASL.Enable = false
	for _, addr := range k.Brokers {
		if probe(addr, &plain) != nil {
			continue // unreachable or TLS; sarama's error says so
		}
		if serr := probe(addr, sc); serr != nil {
			return nil, fmt.Errorf("connect to kafka broker %s as %q with %s: %w: check CDCSYNC_KAFKA_SASL_USER and CDCSYNC_KAFKA_SASL_PASSWORD, and that the listener uses SASL %s (broker: %v)",
				addr, sc.Net.SASL.User, sc.Net.SASL.Mechanism, ErrAuthentication, sc.Net.SASL.Mechanism, serr)
		}
	}
	return nil, fmt.Errorf("connect to kafka brokers %v: %w", k.Brokers, err)
}

// probe opens one connection to addr (TCP, TLS, ApiVersions and SASL when
// enabled in sc) and closes it again.
func probe(addr string, sc *sarama.Config) error {
	b := sarama.NewBroker(addr)
	if err := b.Open(sc); err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	_, err := b.Connected()
	return err
}
