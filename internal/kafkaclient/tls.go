package kafkaclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/cdcsync/cdcsync/config"
)

// tlsConfig builds the client TLS configuration: the CA bundle that signs
// the brokers' certificates (system roots when empty), an optional client
// certificate for mutual TLS, and verification unless explicitly skipped.
func tlsConfig(k config.Kafka) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Only for test clusters with self-made certificates; the
		// variable's description says so and it requires CDCSYNC_KAFKA_TLS.
		InsecureSkipVerify: k.TLSInsecure, //nolint:gosec // opt-in by configuration
	}
	if k.TLSCAFile != "" {
		pem, err := os.ReadFile(k.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("CDCSYNC_KAFKA_TLS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CDCSYNC_KAFKA_TLS_CA_FILE: no PEM certificates in %s", k.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	if k.TLSCertFile != "" || k.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(k.TLSCertFile, k.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("CDCSYNC_KAFKA_TLS_CERT_FILE/KEY_FILE: load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
