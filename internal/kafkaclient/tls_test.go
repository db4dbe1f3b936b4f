package kafkaclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcsync/cdcsync/config"
)

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files.
type pki struct {
	dir                   string
	caFile                string
	clientCert, clientKey string
	server                tls.Certificate
	pool                  *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cdcsync test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", caDER)

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	serverDER, serverKey := issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	p.server = tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}
	clientDER, clientKey := issue(3, "cdcsync", x509.ExtKeyUsageClientAuth)
	p.clientCert = p.write(t, "client.pem", "CERTIFICATE", clientDER)
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientKey = p.write(t, "client-key.pem", "EC PRIVATE KEY", keyDER)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func tlsCluster(t *testing.T, serverTLS *tls.Config, opts ...kfake.Opt) []string {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.SeedTopics(1, "sasl-test")}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func mustConfig(t *testing.T, k config.Kafka) *sarama.Config {
	t.Helper()
	sc, err := Config(k)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func expectConnectError(t *testing.T, k config.Kafka, want string) {
	t.Helper()
	sc := mustConfig(t, k)
	failFast(sc)
	client, err := NewClient(k, sc)
	if err == nil {
		client.Close()
		t.Fatalf("connected, want an error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func TestTLSWithCAFile(t *testing.T) {
	p := newPKI(t)
	brokers := tlsCluster(t, &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12})

	k := kafkaConfig(brokers)
	k.TLS, k.TLSCAFile = true, p.caFile
	roundTrip(t, brokers, mustConfig(t, k), "over TLS")

	// System roots do not know the test CA.
	k.TLSCAFile = ""
	expectConnectError(t, k, "certificate")

	// Verification can be switched off explicitly (test clusters only).
	k.TLSInsecure = true
	roundTrip(t, brokers, mustConfig(t, k), "over unverified TLS")

	// Plain text against a TLS listener fails.
	expectConnectError(t, kafkaConfig(brokers), "run out of available brokers")
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	brokers := tlsCluster(t, &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
		MinVersion:   tls.VersionTLS12,
	})
	k := kafkaConfig(brokers)
	k.TLS, k.TLSCAFile, k.TLSCertFile, k.TLSKeyFile = true, p.caFile, p.clientCert, p.clientKey
	roundTrip(t, brokers, mustConfig(t, k), "over mutual TLS")

	k.TLSCertFile, k.TLSKeyFile = "", ""
	expectConnectError(t, k, "certificate")
}

func TestTLSAndSCRAM(t *testing.T) {
	p := newPKI(t)
	brokers := tlsCluster(t, &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12},
		kfake.EnableSASL(), kfake.Superuser(config.SASLScramSHA512, "cdc", "cdc-secret"))
	k := kafkaConfig(brokers)
	k.TLS, k.TLSCAFile = true, p.caFile
	k.SASLMechanism, k.SASLUser, k.SASLPassword = config.SASLScramSHA512, "cdc", "cdc-secret"
	roundTrip(t, brokers, mustConfig(t, k), "over TLS with SCRAM")
}

func TestConfigRejectsBadTLSFiles(t *testing.T) {
	p := newPKI(t)
	k := kafkaConfig([]string{"127.0.0.1:9092"})
	k.TLS = true
	k.TLSCAFile = p.clientKey // a key, not a certificate
	if _, err := Config(k); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Errorf("CA file without certificates: %v", err)
	}
	k.TLSCAFile = filepath.Join(p.dir, "missing.pem")
	if _, err := Config(k); err == nil || !strings.Contains(err.Error(), "CDCSYNC_KAFKA_TLS_CA_FILE") {
		t.Errorf("missing CA file: %v", err)
	}
	k.TLSCAFile = p.caFile
	k.TLSCertFile, k.TLSKeyFile = p.clientCert, p.caFile // mismatched pair
	if _, err := Config(k); err == nil || !strings.Contains(err.Error(), "load client certificate") {
		t.Errorf("mismatched key pair: %v", err)
	}
}
