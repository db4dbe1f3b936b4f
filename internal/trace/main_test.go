package trace

import (
	"os"
	"testing"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }
