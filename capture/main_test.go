package capture

import (
	"os"
	"testing"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// env holds the services shared by this package's integration tests; nil
// under -short.
var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }
