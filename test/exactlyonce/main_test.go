package exactlyonce

import (
	"os"
	"testing"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// env holds the services shared by this package's tests (Postgres, and a
// broker the tests that restart or hold one do not use); nil under -short.
var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }
