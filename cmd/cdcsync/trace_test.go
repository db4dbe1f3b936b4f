package main

import (
	"strings"
	"testing"
)

func TestTraceUsage(t *testing.T) {
	r := runBinary(t, []string{"CDCSYNC_SOURCE_URL=postgres://localhost/x"}, "trace", "--table", "public.orders")
	if r.code != 2 || !strings.Contains(r.stderr, "--table and --key are required") {
		t.Errorf("no --key: exit %d, %q", r.code, r.stderr)
	}
	r = runBinary(t, []string{"CDCSYNC_SOURCE_URL=postgres://localhost/x"}, "trace", "--table", "orders", "--key", `{"id":1}`)
	if r.code != 2 || !strings.Contains(r.stderr, "want schema.table") {
		t.Errorf("table without schema: exit %d, %q", r.code, r.stderr)
	}
	r = runBinary(t, nil, "trace", "--help")
	for _, want := range []string{"Usage: cdcsync trace [options]", "-table", "-key", "-json", "CDCSYNC_SOURCE_URL"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("--help lacks %q:\n%s", want, r.stdout)
		}
	}
}
