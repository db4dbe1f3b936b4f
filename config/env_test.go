package config

import (
	"os"
	"strings"
	"testing"
)

// isolateEnv removes every variable spec could read (prefixed, and the
// unprefixed names envconfig falls back to) for the duration of the test,
// then sets env.
func isolateEnv(t *testing.T, spec any, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, Prefix+"_") {
			unset(t, name)
		}
	}
	for _, v := range Vars(spec) {
		if v.Alt != "" {
			unset(t, v.Alt)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func unset(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "") // registers the restore of the old value
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}
