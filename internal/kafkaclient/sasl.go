package kafkaclient

import (
	"fmt"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"

	"github.com/cdcsync/cdcsync/config"
)

// setSASL enables SASL on cfg when k names a mechanism.
func setSASL(cfg *sarama.Config, k config.Kafka) error {
	switch k.SASLMechanism {
	case "":
		return nil
	case config.SASLPlain:
		cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case config.SASLScramSHA256:
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
	case config.SASLScramSHA512:
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
	default:
		return fmt.Errorf("CDCSYNC_KAFKA_SASL_MECHANISM %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.SASLMechanism)
	}
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Handshake = true
	cfg.Net.SASL.User = k.SASLUser
	cfg.Net.SASL.Password = k.SASLPassword
	return nil
}

// scramClient adapts xdg-go/scram to sarama.SCRAMClient. sarama creates one
// per connection through SCRAMClientGeneratorFunc, so it holds one
// conversation.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

var _ sarama.SCRAMClient = (*scramClient)(nil)

// Begin starts a conversation for the user.
func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return fmt.Errorf("scram client for %s: %w", user, err)
	}
	c.conv = client.NewConversation()
	return nil
}

// Step answers the server's challenge.
func (c *scramClient) Step(challenge string) (string, error) {
	resp, err := c.conv.Step(challenge)
	if err != nil {
		return "", fmt.Errorf("scram step: %w", err)
	}
	return resp, nil
}

// Done reports whether the conversation completed (server verified).
func (c *scramClient) Done() bool { return c.conv.Done() }
