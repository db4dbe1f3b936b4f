package kafkaclient

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcsync/cdcsync/config"
)

// saslCluster is a kfake broker that requires SASL, with one superuser per
// mechanism.
func saslCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.EnableSASL(),
		kfake.Superuser(config.SASLPlain, "plain-user", "plain-secret"),
		kfake.Superuser(config.SASLScramSHA256, "scram256-user", "scram256-secret"),
		kfake.Superuser(config.SASLScramSHA512, "scram512-user", "scram512-secret"),
		kfake.SeedTopics(1, "sasl-test"),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func kafkaConfig(brokers []string) config.Kafka {
	return config.Kafka{Brokers: brokers, Version: "3.6.0", ClientID: "cdcsync-test"}
}

// failFast keeps a failing connection test from retrying for a minute.
func failFast(sc *sarama.Config) {
	sc.Metadata.Retry.Max = 0
	sc.Net.DialTimeout = 5 * time.Second
}

// roundTrip produces one record with sc and fetches it back.
func roundTrip(t *testing.T, brokers []string, sc *sarama.Config, value string) {
	t.Helper()
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	producer, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer producer.Close()
	partition, offset, err := producer.SendMessage(&sarama.ProducerMessage{Topic: "sasl-test", Value: sarama.StringEncoder(value)})
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	consumer, err := sarama.NewConsumer(brokers, sc)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition("sasl-test", partition, offset)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	defer pc.Close()
	select {
	case m := <-pc.Messages():
		if string(m.Value) != value {
			t.Fatalf("fetched %q, want %q", m.Value, value)
		}
	case err := <-pc.Errors():
		t.Fatalf("fetch: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("record not fetched within 10s")
	}
}

func TestSASLAuthenticatedProduceAndFetch(t *testing.T) {
	c := saslCluster(t)
	brokers := c.ListenAddrs()
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			k := kafkaConfig(brokers)
			prefix := map[string]string{config.SASLPlain: "plain", config.SASLScramSHA256: "scram256", config.SASLScramSHA512: "scram512"}[mech]
			k.SASLMechanism, k.SASLUser, k.SASLPassword = mech, prefix+"-user", prefix+"-secret"
			sc, err := Config(k)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, brokers, sc, fmt.Sprintf("hello over %s", mech))
		})
	}
}

func TestSASLWrongPasswordFails(t *testing.T) {
	c := saslCluster(t)
	brokers := c.ListenAddrs()
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			k := kafkaConfig(brokers)
			prefix := map[string]string{config.SASLPlain: "plain", config.SASLScramSHA256: "scram256", config.SASLScramSHA512: "scram512"}[mech]
			k.SASLMechanism, k.SASLUser, k.SASLPassword = mech, prefix+"-user", "wrong-password"
			sc, err := Config(k)
			if err != nil {
				t.Fatal(err)
			}
			failFast(sc)
			client, err := NewClient(k, sc)
			if err == nil {
				client.Close()
				t.Fatal("connected with a wrong password")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "CDCSYNC_KAFKA_SASL_PASSWORD") {
				t.Errorf("error does not say authentication failed: %v", err)
			}
			if strings.Contains(err.Error(), "wrong-password") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// An unreachable broker is not reported as an authentication problem.
func TestSASLUnreachableIsNotAuthentication(t *testing.T) {
	c := saslCluster(t)
	addr := c.ListenAddrs()[0]
	c.Close()
	k := kafkaConfig([]string{addr})
	k.SASLMechanism, k.SASLUser, k.SASLPassword = config.SASLScramSHA256, "scram256-user", "scram256-secret"
	sc, err := Config(k)
	if err != nil {
		t.Fatal(err)
	}
	failFast(sc)
	client, err := NewClient(k, sc)
	if err == nil {
		client.Close()
		t.Fatal("connected to a closed broker")
	}
	if errors.Is(err, ErrAuthentication) {
		t.Errorf("unreachable broker reported as authentication failure: %v", err)
	}
}

// Without SASL configured the broker refuses to serve the client.
func TestSASLRequiredByBroker(t *testing.T) {
	c := saslCluster(t)
	sc, err := Config(kafkaConfig(c.ListenAddrs()))
	if err != nil {
		t.Fatal(err)
	}
	failFast(sc)
	sc.Producer.Return.Successes = true
	producer, err := sarama.NewSyncProducer(c.ListenAddrs(), sc)
	if err == nil {
		_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: "sasl-test", Value: sarama.StringEncoder("x")})
		producer.Close()
	}
	if err == nil {
		t.Fatal("produced without authenticating")
	}
}
