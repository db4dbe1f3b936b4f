package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cdcsync/cdcsync/internal/services"
)

// MissingError says which server binaries the demo needs but cannot find,
// and which Debian/Ubuntu packages provide them.
type MissingError struct {
	What     []string // e.g. "the Postgres server binaries (initdb)"
	Packages []string // e.g. "postgresql"
}

func (e *MissingError) Error() string {
	pkgs := strings.Join(e.Packages, " ")
	return fmt.Sprintf("the demo needs %s, which %s not installed: install the Debian/Ubuntu %s %s "+
		"(sudo apt-get install %s)", strings.Join(e.What, " and "), plural(len(e.What), "is", "are"),
		plural(len(e.Packages), "package", "packages"), pkgs, pkgs)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// CheckPrerequisites reports, as a *MissingError, the server binaries the
// demo starts for itself but cannot find: initdb and postgres (found like
// the test harness finds them: $PG_BINDIR, pg_config, or
// /usr/lib/postgresql/*/bin) and redis-server on the PATH. Kafka needs
// nothing: the demo embeds a development broker.
func CheckPrerequisites() error {
	var missing MissingError
	if dir, err := services.PostgresBinDir(); err != nil || !executable(filepath.Join(dir, "initdb")) ||
		!executable(filepath.Join(dir, "postgres")) {
		missing.What = append(missing.What, "the Postgres 15+ server binaries (initdb, postgres; or set PG_BINDIR)")
		missing.Packages = append(missing.Packages, "postgresql")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		missing.What = append(missing.What, "redis-server")
		missing.Packages = append(missing.Packages, "redis-server")
	}
	if len(missing.What) > 0 {
		return &missing
	}
	return nil
}

func executable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// demoServices are the demo's throwaway servers (internal/services, which
// the test harness shares): a Postgres cluster in a temp dir with
// wal_level=logical (run as the postgres user when the demo runs as
// root), redis-server on a free port, and an in-process kfake broker,
// each removed again by close.
type demoServices struct {
	pg    *services.Postgres
	redis *services.Redis
	kafka *services.Kafka
}

func startServices() (*demoServices, error) {
	s := &demoServices{}
	var err error
	if s.pg, err = services.StartPostgres(); err != nil {
		return nil, fmt.Errorf("start Postgres: %w", err)
	}
	if s.redis, err = services.StartRedis(); err != nil {
		s.close()
		return nil, fmt.Errorf("start Redis: %w", err)
	}
	if s.kafka, err = services.StartKafka(); err != nil {
		s.close()
		return nil, fmt.Errorf("start the development broker: %w", err)
	}
	return s, nil
}

// close stops the servers and removes their directories.
func (s *demoServices) close() {
	if s.kafka != nil {
		s.kafka.Close()
	}
	if s.redis != nil {
		s.redis.Close()
	}
	if s.pg != nil {
		s.pg.Close()
	}
}

// leftovers lists directories of the services that still exist; empty
// after close.
func (s *demoServices) leftovers() []string {
	var out []string
	for _, d := range []string{s.pg.Dir, s.redis.Dir, s.kafka.DataDir} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			out = append(out, d)
		}
	}
	return out
}
