package config

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://cdc:hunter2@db:5432/orders?sslmode=require", "postgres://cdc:xxxxx@db:5432/orders?sslmode=require"},
		{"postgresql://cdc@db/orders", "postgresql://cdc@db/orders"},
		{"postgres://db/orders?user=cdc&password=hunter2", "postgres://db/orders?user=cdc&password=xxxxx"},
		{"postgres://cdc:p%40ss%2Fword@db/orders", "postgres://cdc:xxxxx@db/orders"},
		{"redis://:hunter2@cache:6379/0", "redis://:xxxxx@cache:6379/0"},
		{"rediss://default:hunter2@cache:6380/1", "rediss://default:xxxxx@cache:6380/1"},
		{"redis://localhost:6379/0", "redis://localhost:6379/0"},
		{"host=db user=cdc password=hunter2 dbname=orders", "host=db user=cdc password=xxxxx dbname=orders"},
		{"host=db password = 'hunter 2' dbname=orders", "host=db password = xxxxx dbname=orders"},
		{`host=db password='it\'s hunter2' sslpassword=keypass2`, "host=db password=xxxxx sslpassword=xxxxx"},
		{"host=db PASSWORD=hunter2", "host=db PASSWORD=xxxxx"},
		// Unparseable: an unescaped '#' in the password.
		{"postgres://cdc:hun#ter2@db/orders", "postgres://cdc:xxxxx@db/orders"},
		{"postgres://cdc:hunter2@db/orders?x=%zz&password=hunter2", "postgres://cdc:xxxxx@db/orders?x=%zz&password=xxxxx"},
		{"postgres://cdc:hun/ter2@db/orders?password=hunter2", "postgres://cdc:xxxxx@db/orders?xxxxx"},
		{"", ""},
	}
	for _, tc := range cases {
		got := RedactURL(tc.in)
		if got != tc.want {
			t.Errorf("RedactURL(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "hunter") || strings.Contains(got, "keypass") {
			t.Errorf("RedactURL(%q) leaks the password: %q", tc.in, got)
		}
	}
}
