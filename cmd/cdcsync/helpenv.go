package main

import (
	"context"
	"fmt"
	"io"

	"github.com/cdcsync/cdcsync/config"
)

// helpEnvCommand prints the configuration of every command as Markdown
// tables; the README's configuration section is this output, and a test
// keeps the two equal.
func helpEnvCommand() command {
	return command{
		Name:    "help-env",
		Summary: "print every command's environment variables (--markdown for the README)",
		Hidden:  true,
		Run: func(_ context.Context, st *streams, args []string) error {
			if len(args) != 1 || args[0] != "--markdown" {
				return &usageError{msg: "usage: cdcsync help-env --markdown"}
			}
			return writeEnvMarkdown(st.Stdout, commands())
		},
	}
}

func writeEnvMarkdown(w io.Writer, cmds []command) error {
	first := true
	for _, c := range cmds {
		if c.Config == nil || c.Hidden {
			continue
		}
		if !first {
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		first = false
		if _, err := fmt.Fprintf(w, "#### `cdcsync %s`\n\n", c.Name); err != nil {
			return err
		}
		if err := config.WriteMarkdown(w, c.Config()); err != nil {
			return err
		}
	}
	return nil
}
