// Package logging builds the process logger (log/slog) from config.Log.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cdcsync/cdcsync/config"
)

// New returns a logger writing to w in the configured format (text or
// json) at the configured level (debug, info, warn, error).
func New(cfg config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.TrimSpace(cfg.Level))); err != nil {
		return nil, fmt.Errorf("log level %q: %w", cfg.Level, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.Format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", cfg.Format)
	}
}
