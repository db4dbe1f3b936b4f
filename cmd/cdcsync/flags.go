package main

import (
	"flag"
	"io"
	"strconv"
)

// newFlags returns an empty flag set for a command's options. Parse errors
// are returned, not printed: parseFlags turns them into usage errors.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args, which must be options only; mistakes exit 2.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return &usageError{msg: err.Error() + "; see --help"}
	}
	if fs.NArg() > 0 {
		return &usageError{msg: "unexpected argument " + strconv.Quote(fs.Arg(0)) + "; see --help"}
	}
	return nil
}
