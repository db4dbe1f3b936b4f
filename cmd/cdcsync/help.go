package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cdcsync/cdcsync/config"
)

func writeUsage(w io.Writer, cmds []command) {
	fmt.Fprint(w, "cdcsync keeps an inventory store and Redis caches consistent with an order\n"+
		"database by streaming Postgres changes through Kafka.\n\n"+
		"Usage: cdcsync <command> [--help]\n\nCommands:\n")
	for _, c := range cmds {
		if !c.Hidden {
			fmt.Fprintf(w, "  %-11s %s\n", c.Name, c.Summary)
		}
	}
	fmt.Fprint(w, "\nConfiguration is read from CDCSYNC_ environment variables only.\n"+
		"'cdcsync <command> --help' lists a command's variables and defaults.\n")
}

func writeCommandHelp(w io.Writer, c command) {
	switch {
	case c.Usage != "":
		fmt.Fprintln(w, strings.TrimRight(c.Usage, "\n"))
	case c.Flags == nil:
		fmt.Fprintf(w, "Usage: cdcsync %s\n\n%s\n", c.Name, c.Summary)
	default:
		fmt.Fprintf(w, "Usage: cdcsync %s [options]\n\n%s\n\nOptions:\n", c.Name, c.Summary)
		fs := c.Flags()
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if c.Config == nil {
		return
	}
	fmt.Fprint(w, "\nEnvironment variables (current values shown when set; secrets never):\n")
	if err := config.WriteHelp(w, c.Config(), os.LookupEnv); err != nil {
		fmt.Fprintf(os.Stderr, "cdcsync: write help: %v\n", err)
	}
}
