// Command cdcsync is the one binary of the pipeline: `cdcsync <command>`.
// Each command lives in its own file and is listed in commands below;
// daemons are configured by CDCSYNC_ environment variables only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/cdcsync/cdcsync/config"
)

// commands is the registry: adding a command is a new file with a
// constructor, plus its line here. The order is the order of `cdcsync help`.
func commands() []command {
	return []command{
		captureCommand(),
		sinkCommand(),
		replayCommand(),
		verifyCommand(),
		traceCommand(),
		statusCommand(),
		demoCommand(),
		devBrokerCommand(),
		helpEnvCommand(),
		healthcheckCommand(),
	}
}

// command is one `cdcsync <name>`.
type command struct {
	Name    string
	Summary string // one line for `cdcsync help`
	// Usage, when set, is what --help prints instead of the usage line
	// and summary made from Name, Summary and Flags: for commands with
	// subcommands, whose options Flags cannot describe.
	Usage string
	// Config returns a new pointer to the command's configuration struct
	// so that --help can list its variables; nil when it has none.
	Config func() any
	// Flags returns a new flag set of the command's options so that
	// --help can list them; nil when it takes none.
	Flags func() *flag.FlagSet
	// Hidden commands are left out of `cdcsync help`.
	Hidden bool
	// Run does the work until ctx is cancelled (SIGINT/SIGTERM) or done.
	// Its error decides the exit status: see exitStatus.
	Run func(ctx context.Context, st *streams, args []string) error
}

// streams are the process's standard output and error.
type streams struct {
	Stdout, Stderr io.Writer
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime error
	exitUsage   = 2 // bad configuration or command line
)

// usageError is a command-line mistake; it exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// exitError carries a specific exit status (e.g. verify found drift) and
// a message, already printed or logged when Err is nil.
type exitError struct {
	Code int
	Err  error
}

func (e *exitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *exitError) Unwrap() error { return e.Err }

// loggedError marks an error the command has already logged, so that main
// does not print it a second time.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], &streams{Stdout: os.Stdout, Stderr: os.Stderr}))
}

func run(args []string, st *streams) int {
	cmds := commands()
	if len(args) == 0 {
		writeUsage(st.Stderr, cmds)
		return exitUsage
	}
	if isHelp(args[0]) || args[0] == "help" {
		if len(args) > 1 {
			c := find(cmds, args[1])
			if c == nil {
				fmt.Fprintf(st.Stderr, "cdcsync: unknown command %q; run 'cdcsync help'\n", args[1])
				return exitUsage
			}
			writeCommandHelp(st.Stdout, *c)
			return exitOK
		}
		writeUsage(st.Stdout, cmds)
		return exitOK
	}
	c := find(cmds, args[0])
	if c == nil {
		fmt.Fprintf(st.Stderr, "cdcsync: unknown command %q; run 'cdcsync help'\n", args[0])
		return exitUsage
	}
	if slices.ContainsFunc(args[1:], isHelp) {
		writeCommandHelp(st.Stdout, *c)
		return exitOK
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default handling so that a
		// second Ctrl-C ends a shutdown that takes too long.
		<-ctx.Done()
		stop()
	}()
	return exitStatus(c.Run(ctx, st, args[1:]), c.Name, st.Stderr)
}

// exitStatus prints err unless it was logged already and maps it to the
// exit status: 0 for nil, 2 for configuration and usage errors, the
// carried code for exitError, 1 otherwise.
func exitStatus(err error, name string, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		// One line, naming the variable.
		fmt.Fprintf(stderr, "cdcsync: %s\n", cfgErr.Error())
		return exitUsage
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "cdcsync %s: %s\n", name, ue.msg)
		return exitUsage
	}
	var logged *loggedError
	printed := errors.As(err, &logged)
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.Err != nil && !printed {
			fmt.Fprintf(stderr, "cdcsync %s: %v\n", name, ee.Err)
		}
		return ee.Code
	}
	if !printed {
		fmt.Fprintf(stderr, "cdcsync %s: %v\n", name, err)
	}
	return exitFailure
}

func find(cmds []command, name string) *command {
	for i := range cmds {
		if cmds[i].Name == name {
			return &cmds[i]
		}
	}
	return nil
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help"
}

// noArgs rejects arguments for commands that take none.
func noArgs(args []string) error {
	if len(args) > 0 {
		return &usageError{msg: fmt.Sprintf("unexpected argument %q; configuration is read from CDCSYNC_ environment variables (see --help)", args[0])}
	}
	return nil
}
