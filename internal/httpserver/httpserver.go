// Package httpserver serves a daemon's operational endpoints: /metrics
// (Prometheus), /healthz (the process is alive) and /readyz (the daemon
// says it can do its work).
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownTimeout bounds how long in-flight scrapes may finish after the
// context ends.
const shutdownTimeout = 5 * time.Second

// NewRegistry returns a registry with the Go runtime and process
// collectors, for the daemon to add its own metrics to.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Route is one more endpoint a daemon serves beside the usual ones (the
// sink's /applied).
type Route struct {
	Pattern string // http.ServeMux pattern, e.g. "GET /applied"
	Handler http.Handler
}

// Handler routes /metrics, /healthz, /readyz and the daemon's own routes.
func Handler(gatherer prometheus.Gatherer, ready *Readiness, routes ...Route) http.Handler {
	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r.Pattern, r.Handler)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	// Liveness: answering at all is the signal. Anything more (checking
	// Kafka, Postgres) belongs in readiness, or a broker outage would make
	// an orchestrator restart every healthy process.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, reason := ready.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// Server is a listening HTTP server; Listen binds, Run serves.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	logger *slog.Logger
}

// Listen binds addr now, so that a busy or invalid address fails at
// start-up rather than after the daemon is running.
func Listen(addr string, handler http.Handler, logger *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &Server{
		ln:     ln,
		logger: logger,
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is done, then shuts down, letting requests in flight
// finish for a few seconds. It returns nil after a shutdown caused by ctx.
func (s *Server) Run(ctx context.Context) error {
	s.logger.Info("http server listening", "addr", s.Addr())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server on %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	// The parent context is cancelled; shutting down needs its own.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	if err != nil {
		return fmt.Errorf("http server shutdown: %w", err)
	}
	return nil
}
