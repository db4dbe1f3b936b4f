package sink

import (
	"net"
	"os"
	"strconv"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
)

// noInstanceID in CDCSYNC_GROUP_INSTANCE_ID asks for dynamic membership.
const noInstanceID = "-"

// groupInstanceID is the sink process's static consumer group member id
// (KIP-345): CDCSYNC_GROUP_INSTANCE_ID when set, otherwise derived from
// the host name and the port of CDCSYNC_HTTP_ADDR, which together tell
// the processes of a host apart and stay the same when one restarts.
// Empty means dynamic membership: when asked for with "-", or when there
// is no fixed port to derive an id from.
//
// Why static by default: with dynamic membership a sink killed and
// restarted joins as a new member while its dead self stays in the group
// until the session timeout; rapid restarts pile up dead members, each
// rebalance waits for or assigns partitions to some of them, and the
// group may take several session timeouts to settle (issue 14). A
// restarted static member replaces its dead self at once and gets its
// partitions back without a rebalance. The price: a member stopped for
// good keeps its partitions until the session timeout, as a dead one does.
func groupInstanceID(cfg config.Sink) string {
	switch cfg.GroupInstanceID {
	case noInstanceID:
		return ""
	case "":
	default:
		return cfg.GroupInstanceID
	}
	_, port, err := net.SplitHostPort(cfg.HTTP.Addr)
	if err != nil {
		return ""
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 {
		return ""
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return ""
	}
	return host + "-" + port
}

// setGroupTimeouts bounds how long a rebalance may wait for members, and
// makes the client wait for a JoinGroup at least that long.
//
// The coordinator holds every JoinGroup until all known members rejoined
// or the rebalance timeout passed, and a member that died while it was
// joining counts as known until then. sarama's defaults (rebalance timeout
// 60 s, read timeout 30 s) let a sink restarted in such a group give up
// its JoinGroup before the coordinator answers, retry, and never rejoin
// (issue 14). Kafka's Java client waits rebalance timeout + 5 s for a
// join; so do we. The rebalance timeout itself only has to cover a live
// member's way back into the group: noticing the rebalance (a heartbeat
// interval) and finishing the batch in hand (the shutdown timeout, see
// applyBatch); beyond that, a slower member is left out of the generation
// and rejoins in the next one, which is harmless. Keeping it short keeps
// a restarted sink's rejoin within about the session timeout.
func setGroupTimeouts(sc *sarama.Config, shutdown time.Duration) {
	g := &sc.Consumer.Group
	g.Rebalance.Timeout = max(g.Session.Timeout, shutdown+g.Heartbeat.Interval+2*time.Second)
	sc.Net.ReadTimeout = max(sc.Net.ReadTimeout, g.Rebalance.Timeout+5*time.Second)
}
