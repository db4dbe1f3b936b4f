package main

import (
	"context"
	"fmt"
)

// pending is a command that is designed (DESIGN.md) but not built yet. It
// says so and exits 2 rather than pretend to work.
func pending(name, summary string) command {
	return command{
		Name:    name,
		Summary: summary + " (in progress)",
		Run: func(context.Context, *streams, []string) error {
			return &exitError{Code: exitUsage, Err: fmt.Errorf("not implemented yet")}
		},
	}
}
