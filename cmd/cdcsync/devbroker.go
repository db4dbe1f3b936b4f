package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/logging"
)

func devBrokerCommand() command {
	return command{
		Name: "dev-broker",
		Summary: "DEVELOPMENT ONLY: run an in-process Kafka-protocol broker (kfake) for tests and demos; " +
			"never use it in production",
		Config: func() any { return &config.DevBroker{} },
		Run: func(ctx context.Context, st *streams, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			var cfg config.DevBroker
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			logger, err := logging.New(cfg.Log, st.Stderr)
			if err != nil {
				return err
			}
			logger = logger.With("command", "dev-broker")
			if err := runDevBroker(ctx, cfg, logger); err != nil {
				logger.Error("development broker stopped with an error", "err", err)
				return &loggedError{err: err}
			}
			return nil
		},
	}
}

// runDevBroker serves a single kfake broker on cfg.Addr until ctx ends,
// then closes it cleanly (which is when kfake persists auto-created
// topics to the data dir).
func runDevBroker(ctx context.Context, cfg config.DevBroker, logger *slog.Logger) error {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake listens on 127.0.0.1:<port>; listen where asked instead.
		// The broker advertises the address it is bound to.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, cfg.Addr) }),
		kfake.DefaultNumPartitions(int(cfg.Partitions)),
		// Like a stock Kafka broker (auto.create.topics.enable=true).
		kfake.AllowAutoTopicCreation(),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start development broker on %s: %w", cfg.Addr, err)
	}
	addrs := cluster.ListenAddrs()
	logger.Warn("DEVELOPMENT BROKER (kfake, in-process): for tests and demos only, not a production Kafka",
		"addr", addrs, "data_dir", cfg.DataDir, "persistent", cfg.DataDir != "")

	if err := createTopics(addrs, cfg); err != nil {
		cluster.Close()
		return err
	}
	for _, t := range cfg.Topics {
		logger.Info("topic ready", "topic", t)
	}
	<-ctx.Done()
	logger.Info("stopping development broker")
	cluster.Close()
	return nil
}

// createTopics creates the configured topics through the Kafka protocol,
// so that topics are also added to a broker restored from its data dir.
func createTopics(addrs []string, cfg config.DevBroker) error {
	if len(cfg.Topics) == 0 {
		return nil
	}
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_6_0_0
	sc.ClientID = "cdcsync-dev-broker"
	admin, err := sarama.NewClusterAdmin(addrs, sc)
	if err != nil {
		return fmt.Errorf("connect to development broker: %w", err)
	}
	defer admin.Close()
	for _, spec := range cfg.Topics {
		name, partitions, err := config.ParseTopicSpec(spec)
		if err != nil {
			return err // validated already
		}
		if partitions == 0 {
			partitions = cfg.Partitions
		}
		err = admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
		if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
	}
	return nil
}
