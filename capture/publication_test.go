package capture

import (
	"errors"
	"strings"
	"testing"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestExistingPublicationIsValidated: an existing publication that would
// drop updates and deletes, route partitions elsewhere or filter rows and
// columns the snapshot does not makes capture refuse at start, naming the
// publication and the ALTER PUBLICATION that fixes it.
func TestExistingPublicationIsValidated(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL,
		`CREATE TABLE porders (id bigint PRIMARY KEY, status text) PARTITION BY RANGE (id)`,
		`CREATE TABLE porders_1 PARTITION OF porders FOR VALUES FROM (0) TO (1000)`)
	cases := []struct {
		name, table, create string
		want                []string
	}{
		{"publish insert only", "public.orders", `FOR TABLE orders WITH (publish = 'insert')`,
			[]string{"does not publish update, delete, truncate", "SET (publish = 'insert, update, delete, truncate')"}},
		{"partitions not via root", "public.porders", `FOR TABLE porders WITH (publish_via_partition_root = false)`,
			[]string{"public.porders", "SET (publish_via_partition_root = true)"}},
		{"row filter", "public.orders", `FOR TABLE orders WHERE (status = 'paid')`,
			[]string{"a row filter (WHERE) on public.orders", `DROP TABLE "public"."orders"`, `ADD TABLE "public"."orders"`}},
		{"column list", "public.orders", `FOR TABLE orders (id, item_id, quantity, status)`,
			[]string{"a column list on public.orders"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(e, db, c.table)
			mustExec(t, conn, "CREATE PUBLICATION "+cfg.Publication+" "+c.create)
			err := runCaptureUntilError(t, cfg)
			if !errors.Is(err, ErrPublication) {
				t.Fatalf("err = %v, want ErrPublication", err)
			}
			for _, w := range append(c.want, "ALTER PUBLICATION \""+cfg.Publication+"\"") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}
