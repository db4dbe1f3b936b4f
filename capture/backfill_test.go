package capture

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckWhereSyntaxAccepts(t *testing.T) {
	for _, where := range []string{
		"status = 'paid'",
		"id > 10 AND (quantity < 5 OR status IN ('a', 'b'))",
		"note = 'semi; colon' OR note = 'it''s'",
		`note = E'back\'slash; still a string'`,
		`"weird;col" = 1`,
		`"quote""d" = 2`,
		"note = $$dollar; ) quoted$$",
		"note = $tag$ -- not a comment $tag$",
		"created_at > now() - interval '1 day'",
		"id IN (SELECT id FROM orders WHERE quantity > 1)",
		"price$1 > 0", // '$' continues an identifier: not a parameter
		"x = 'a--b' AND y = '/*'",
	} {
		if err := checkWhereSyntax(where); err != nil {
			t.Errorf("checkWhereSyntax(%q) = %v, want nil", where, err)
		}
	}
}

func TestCheckWhereSyntaxRejects(t *testing.T) {
	cases := []struct{ where, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{"true; DROP TABLE orders", "';' is not allowed"},
		{"1=1) OR (1=1", "unbalanced"},
		{"(id > 1", "unbalanced"},
		{"id > 1 -- rest of the query", "comments"},
		{"id > 1 /* x */", "comments"},
		{"note = 'open", "unterminated string"},
		{`"open = 1`, "unterminated quoted identifier"},
		{"note = $q$ never closed", "unterminated dollar-quoted"},
		{"id = $1", "parameters"},
		{`note = E'escaped quote \' then ; outside`, "unterminated string"},
	}
	for _, tc := range cases {
		err := checkWhereSyntax(tc.where)
		if !errors.Is(err, ErrBadWhere) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkWhereSyntax(%q) = %v, want ErrBadWhere mentioning %q", tc.where, err, tc.want)
		}
	}
}

func TestPlanRows(t *testing.T) {
	plan := `[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "orders", "Plan Rows": 1234, "Plan Width": 0}}]`
	if got := planRows(plan); got != 1234 {
		t.Errorf("planRows = %d, want 1234", got)
	}
	if got := planRows("not json"); got != 0 {
		t.Errorf("planRows(bad) = %d, want 0", got)
	}
}

func TestWhereClause(t *testing.T) {
	if got := whereClause("  "); got != "" {
		t.Errorf("whereClause(blank) = %q", got)
	}
	if got := whereClause("a = 1 OR b = 2"); got != " AND (a = 1 OR b = 2)" {
		t.Errorf("whereClause = %q", got)
	}
}

func TestPermanentBackfillErr(t *testing.T) {
	if !permanentBackfillErr(errors.Join(errors.New("x"), ErrBadWhere)) {
		t.Error("ErrBadWhere should be permanent")
	}
	if permanentBackfillErr(errors.New("connection reset")) {
		t.Error("a plain error should be retried")
	}
}
