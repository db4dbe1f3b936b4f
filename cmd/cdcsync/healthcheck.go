package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cdcsync/cdcsync/config"
)

// healthcheckCommand probes the daemon's own HTTP endpoint. Container
// images built on distroless/static have no curl or wget, so Docker
// HEALTHCHECKs and exec probes run the binary itself.
func healthcheckCommand() command {
	return command{
		Name:    "healthcheck",
		Summary: "probe /healthz (or the path given, e.g. /readyz) on CDCSYNC_HTTP_ADDR; exit 0 when it answers 200",
		Hidden:  true,
		Config:  func() any { return &config.HTTP{} },
		Run: func(ctx context.Context, st *streams, args []string) error {
			path := "/healthz"
			switch {
			case len(args) == 1 && strings.HasPrefix(args[0], "/"):
				path = args[0]
			case len(args) > 0:
				return &usageError{msg: "usage: cdcsync healthcheck [/healthz|/readyz]"}
			}
			var cfg config.HTTP
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			if cfg.Addr == "" {
				return &usageError{msg: "CDCSYNC_HTTP_ADDR is empty: the HTTP endpoints are disabled"}
			}
			url, err := probeURL(cfg.Addr, path)
			if err != nil {
				return err
			}
			return probeHTTP(ctx, st, url)
		},
	}
}

// probeURL turns a listen address into a URL to reach it locally: a
// wildcard or empty host becomes the loopback address.
func probeURL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("CDCSYNC_HTTP_ADDR %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

func probeHTTP(ctx context.Context, st *streams, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprint(st.Stdout, string(body))
	return nil
}
